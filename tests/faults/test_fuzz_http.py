"""A bounded slice of `make fuzz-http` in `make test`: mutated bodies, headers and framing sent to the
real receiver under gunicorn. No 5xx but 503, no hang, no worker restart, and Pub/Sub holds exactly the
bodies that were answered 2xx (a 2xx to an empty body publishes nothing)."""

from __future__ import annotations

import os

from tools import fuzz_http, services

REQUESTS = int(os.environ.get("FUZZ_HTTP_SLICE", 4000))


def test_fuzzed_http_requests_never_5xx_hang_or_restart_and_pubsub_equals_the_2xx(log_dir, pubsub_emulator,
                                                                                   topic_and_subscription, tmp_path):
    topic, subscription = topic_and_subscription
    receiver, url = services.start_receiver(log_dir, pubsub_emulator, topic, name="receiver-fuzz",
                                            env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})
    try:
        # /-/healthy answers as soon as one worker serves; the other may still be forking
        services.wait_until(lambda: len(fuzz_http.worker_pids(receiver.pid)) == 2, 30, "both gunicorn workers")
        workers = fuzz_http.worker_pids(receiver.pid)
        outcome = fuzz_http.fuzz_parallel(url, REQUESTS, processes=2, seed=14)
        problems = fuzz_http.check(outcome, fuzz_http.published_in(subscription.path), workers,
                                   fuzz_http.worker_pids(receiver.pid))
    finally:
        receiver.stop()
    print(f"\nfuzz-http slice: {REQUESTS} requests, {dict(sorted(outcome.statuses.items()))}, "
          f"{sum(outcome.published.values())} published")
    assert not problems, problems
    assert sum(outcome.statuses.values()) == REQUESTS
    # the slice reaches every layer: accepted, refused as invalid, unsupported, too large
    assert {204, 400, 415}.issubset(outcome.statuses) and sum(outcome.published.values()) > REQUESTS // 20
