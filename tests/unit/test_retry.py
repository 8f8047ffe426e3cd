"""The sink retry policy: status classes, connection errors, backoff, jitter, Retry-After, give-up limits."""

from __future__ import annotations

import dataclasses
import errno
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from transforms.core.retry import (
    DEFAULT_INITIAL_DELAY,
    DEFAULT_MAX_DELAY,
    DEFAULT_MAX_RETRY_AFTER,
    Action,
    Decision,
    ErrorKind,
    Jitter,
    Outcome,
    RetryPolicy,
    classify,
    parse_retry_after,
)

NOW = datetime(2024, 5, 17, 12, 0, 0, tzinfo=UTC)
HALF = 0.5  # an injected "random" that always returns the middle of [0, 1)


def fixed(value: float = HALF) -> RetryPolicy:
    return RetryPolicy(random=lambda: value)


def decide(policy: RetryPolicy, status: int, attempt: int = 1, elapsed: float = 0.0, **headers: str) -> Decision:
    outcome = classify(status, None, {k.replace("_", "-"): v for k, v in headers.items()})
    return policy.decide(attempt, outcome, elapsed, NOW)


def http_date(seconds_from_now: float) -> str:
    return format_datetime(NOW + timedelta(seconds=seconds_from_now), usegmt=True)


def named(name: str, *bases: type[BaseException]) -> type[Exception]:
    """An exception class named like a requests/urllib3/httpx one, without importing the library."""
    return type(name, bases or (Exception,), {})


# --- status classes ------------------------------------------------------------------------------

@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_2xx_is_success(status):
    decision = decide(fixed(), status)
    assert decision == Decision(Action.SUCCESS, 0.0, f"HTTP {status}")
    assert not decision.dead_letter


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413, 415, 422])
def test_other_4xx_is_final(status):
    decision = decide(fixed(), status, attempt=1, Retry_After="1")
    assert decision.action is Action.DROP_FINAL
    assert decision.delay_seconds == 0.0
    assert decision.dead_letter
    assert str(status) in decision.reason


@pytest.mark.parametrize("status", [100, 301, 304, 600])
def test_statuses_outside_2xx_4xx_5xx_are_final(status):
    assert decide(fixed(), status).action is Action.DROP_FINAL


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 599])
def test_408_429_and_5xx_are_retried(status):
    decision = decide(fixed(), status)
    assert decision.action is Action.RETRY
    assert decision.delay_seconds == pytest.approx(HALF * DEFAULT_INITIAL_DELAY)
    assert not decision.dead_letter
    assert str(status) in decision.reason and "backoff" in decision.reason


# --- connection errors ---------------------------------------------------------------------------

@pytest.mark.parametrize(("error", "kind"), [
    (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), ErrorKind.REFUSED),
    (ConnectionResetError(errno.ECONNRESET, "reset"), ErrorKind.RESET),
    (ConnectionAbortedError(), ErrorKind.RESET),
    (BrokenPipeError(), ErrorKind.RESET),
    (TimeoutError(), ErrorKind.TIMEOUT),
    (named("ServerTimeoutError", named("ServerConnectionError"), TimeoutError)(), ErrorKind.TIMEOUT),
    (ConnectionError("generic"), ErrorKind.NETWORK),
    (OSError(errno.EHOSTUNREACH, "No route to host"), ErrorKind.NETWORK),
    (named("ReadTimeout")(), ErrorKind.TIMEOUT),
    (named("ConnectTimeout", named("ConnectionError"))(), ErrorKind.TIMEOUT),
    (named("NewConnectionError")(), ErrorKind.REFUSED),
    (named("ProtocolError")("Connection aborted."), ErrorKind.RESET),
    (named("ChunkedEncodingError", OSError)(), ErrorKind.RESET),
])
def test_connection_errors_are_classified_and_retried(error, kind):
    outcome = classify(None, error)
    assert outcome == Outcome(error=kind, detail=f"{type(error).__name__}: {error}")
    decision = fixed().decide(1, outcome, 0.0, NOW)
    assert decision.action is Action.RETRY
    assert decision.delay_seconds == pytest.approx(HALF * DEFAULT_INITIAL_DELAY)
    assert kind.value in decision.reason


@pytest.mark.parametrize("error", [
    ValueError("bad"), KeyError("x"), RuntimeError("bug"), named("InvalidURL", OSError, ValueError)(),
    named("TooManyRedirects", OSError)(), named("UnsupportedProtocol", named("TransportError"))(),
])
def test_errors_that_are_not_connection_errors_are_final(error):
    outcome = classify(None, error)
    assert outcome.error is ErrorKind.OTHER
    decision = fixed().decide(1, outcome, 0.0, NOW)
    assert decision.action is Action.DROP_FINAL
    assert type(error).__name__ in decision.reason


def test_real_requests_and_urllib3_exceptions():
    requests_exceptions = pytest.importorskip("requests.exceptions")
    urllib3_exceptions = pytest.importorskip("urllib3.exceptions")
    # requests wraps urllib3's MaxRetryError(reason=NewConnectionError) in its own generic ConnectionError
    refused = urllib3_exceptions.NewConnectionError(None, "Failed to establish a new connection: [Errno 111]")
    max_retry = urllib3_exceptions.MaxRetryError(None, "/api/v1/write", reason=refused)
    wrapped = requests_exceptions.ConnectionError(max_retry)
    assert classify(None, max_retry).error is ErrorKind.REFUSED  # through .reason
    wrapped.__context__ = max_retry  # what `raise ConnectionError(e)` inside requests' `except MaxRetryError` sets
    assert classify(None, wrapped).error is ErrorKind.REFUSED
    assert classify(None, requests_exceptions.ConnectionError("no cause")).error is ErrorKind.NETWORK
    assert classify(None, requests_exceptions.ConnectTimeout()).error is ErrorKind.TIMEOUT
    assert classify(None, requests_exceptions.ReadTimeout()).error is ErrorKind.TIMEOUT
    assert classify(None, requests_exceptions.ChunkedEncodingError()).error is ErrorKind.RESET
    assert classify(None, urllib3_exceptions.ProtocolError("Connection aborted.")).error is ErrorKind.RESET
    assert classify(None, urllib3_exceptions.ReadTimeoutError(None, "/", "read timed out")).error is ErrorKind.TIMEOUT
    for final in (requests_exceptions.InvalidURL(), requests_exceptions.MissingSchema(),
                  requests_exceptions.TooManyRedirects()):
        assert classify(None, final).error is ErrorKind.OTHER  # all OSError subclasses, yet never transient


def test_cause_chain_cycles_terminate():
    first, second = ConnectionError("a"), ConnectionError("b")
    first.__context__, second.__context__ = second, first
    assert classify(None, first).error is ErrorKind.NETWORK


def test_classify_status_wins_and_reads_retry_after_case_insensitively():
    outcome = classify(503, TimeoutError(), {"content-type": "text/plain", "RETRY-AFTER": "7"})
    assert outcome == Outcome(status=503, retry_after="7")
    assert classify(503, None).retry_after is None


def test_classify_needs_something_and_re_raises_non_exceptions():
    with pytest.raises(ValueError):
        classify(None, None)
    with pytest.raises(KeyboardInterrupt):
        classify(None, KeyboardInterrupt())
    with pytest.raises(ValueError):
        Outcome()
    with pytest.raises(ValueError):
        Outcome(status=500, error=ErrorKind.RESET)


# --- backoff -------------------------------------------------------------------------------------

@pytest.mark.parametrize("draw", [0.0, 0.25, HALF, 0.999])
def test_backoff_doubles_then_caps(draw):
    policy = fixed(draw)
    ceilings = [min(DEFAULT_MAX_DELAY, DEFAULT_INITIAL_DELAY * 2 ** (n - 1)) for n in range(1, 15)]
    assert ceilings[:3] == pytest.approx([0.030, 0.060, 0.120]) and ceilings[-1] == DEFAULT_MAX_DELAY
    delays = [decide(policy, 503, attempt=n).delay_seconds for n in range(1, 15)]
    assert delays == pytest.approx([draw * c for c in ceilings])


def test_backoff_explicit_values_and_configurable_limits():
    policy = RetryPolicy(initial_delay=0.1, max_delay=1.0, random=lambda: HALF, jitter=Jitter.EQUAL)
    # equal jitter with a draw of 0.5 gives 3/4 of the ceiling: 0.1, 0.2, 0.4, 0.8, then the 1.0 cap
    assert [policy.backoff(n) for n in range(1, 7)] == pytest.approx([0.075, 0.15, 0.3, 0.6, 0.75, 0.75])


def test_backoff_survives_huge_attempt_numbers():
    assert fixed(HALF).backoff(10**9) == pytest.approx(HALF * DEFAULT_MAX_DELAY)


@pytest.mark.parametrize("jitter", list(Jitter))
def test_jitter_bounds_over_many_seeds(jitter):
    lows, highs = {}, {}
    for seed in range(500):
        policy = RetryPolicy(jitter=jitter, random=random.Random(seed).random)
        for attempt in range(1, 12):
            ceiling = min(DEFAULT_MAX_DELAY, DEFAULT_INITIAL_DELAY * 2 ** (attempt - 1))
            delay = policy.backoff(attempt)
            floor = 0.0 if jitter is Jitter.FULL else ceiling / 2
            assert floor <= delay <= ceiling
            lows[attempt] = min(lows.get(attempt, ceiling), (delay - floor) / (ceiling - floor))
            highs[attempt] = max(highs.get(attempt, 0.0), (delay - floor) / (ceiling - floor))
    # the draws really spread over the whole band: not a constant, not half of it
    assert max(lows.values()) < 0.05 and min(highs.values()) > 0.95


def test_jitter_uses_the_injected_random_source():
    draws = iter([0.0, 0.999])
    policy = RetryPolicy(random=lambda: next(draws), jitter=Jitter.FULL)
    assert policy.backoff(3) == 0.0
    assert policy.backoff(3) == pytest.approx(0.999 * 0.120)


# --- Retry-After ---------------------------------------------------------------------------------

@pytest.mark.parametrize("status", [429, 500, 503])
@pytest.mark.parametrize(("header", "seconds"), [("120", 120.0), ("0", 0.0), (" 7 ", 7.0), ("007", 7.0)])
def test_retry_after_delta_seconds(status, header, seconds):
    decision = decide(fixed(), status, Retry_After=header)
    assert decision.action is Action.RETRY
    assert decision.delay_seconds == seconds
    assert "Retry-After" in decision.reason


@pytest.mark.parametrize(("offset", "seconds"), [(90, 90.0), (1, 1.0), (-3600, 0.0), (0, 0.0)])
def test_retry_after_http_date(offset, seconds):
    assert decide(fixed(), 503, Retry_After=http_date(offset)).delay_seconds == pytest.approx(seconds)


def test_retry_after_http_date_obsolete_forms_and_naive_times():
    assert parse_retry_after("Friday, 17-May-24 12:01:00 GMT", NOW, 300) == pytest.approx(60)  # RFC 850
    assert parse_retry_after("Fri May 17 12:00:30 2024", NOW, 300) == pytest.approx(30)  # asctime, naive
    assert parse_retry_after(http_date(45), NOW.replace(tzinfo=None), 300) == pytest.approx(45)


def test_retry_after_is_not_honoured_on_408():
    assert decide(fixed(), 408, Retry_After="120").delay_seconds == pytest.approx(HALF * DEFAULT_INITIAL_DELAY)


@pytest.mark.parametrize("header", ["86400", "301", "9" * 5000, http_date(86400), http_date(10**8)])
def test_retry_after_is_capped(header):
    assert decide(fixed(), 429, Retry_After=header).delay_seconds == DEFAULT_MAX_RETRY_AFTER
    capped = RetryPolicy(max_retry_after=10.0, random=lambda: HALF)
    assert decide(capped, 429, Retry_After=header).delay_seconds == 10.0


@pytest.mark.parametrize("header", [
    "", "   ", "soon", "-5", "1.5", "+3", "1e3", "\u0663", "Fri, 99 Foo 2024 25:61:00 GMT", "Fri, 17 May", "120s",
])
def test_unparseable_retry_after_falls_back_to_backoff(header):
    decision = decide(fixed(), 503, attempt=4, Retry_After=header)
    assert decision.action is Action.RETRY
    assert decision.delay_seconds == pytest.approx(HALF * DEFAULT_INITIAL_DELAY * 8)
    assert "backoff" in decision.reason
    assert parse_retry_after(header, NOW, 300) is None


# --- give-up limits ------------------------------------------------------------------------------

def test_no_limit_by_default_a_sink_down_for_minutes_loses_nothing():
    policy = RetryPolicy(random=random.Random(1).random)
    clock, attempt = 0.0, 0
    while clock < 600:  # ten minutes of 503s and refused connections
        attempt += 1
        outcome = classify(503, None) if attempt % 2 else classify(None, ConnectionRefusedError())
        decision = policy.decide(attempt, outcome, clock, NOW + timedelta(seconds=clock))
        assert decision.action is Action.RETRY and 0 <= decision.delay_seconds <= DEFAULT_MAX_DELAY
        clock += decision.delay_seconds
    assert decide(policy, 503, attempt=10**6, elapsed=10**7).action is Action.RETRY


def test_max_attempts_gives_up_distinctly_from_final_4xx():
    policy = RetryPolicy(max_attempts=3, random=lambda: HALF)
    assert [decide(policy, 503, attempt=n).action for n in (1, 2)] == [Action.RETRY, Action.RETRY]
    gave_up = decide(policy, 503, attempt=3)
    assert gave_up.action is Action.DROP_GAVE_UP and gave_up.dead_letter and "3 attempts" in gave_up.reason
    assert policy.decide(5, classify(None, TimeoutError()), 0.0, NOW).action is Action.DROP_GAVE_UP
    final = decide(policy, 400, attempt=3)
    assert final.action is Action.DROP_FINAL and final.dead_letter and final.action is not gave_up.action
    assert decide(policy, 204, attempt=3).action is Action.SUCCESS


def test_a_refused_connection_is_described_by_its_innermost_cause():
    import requests

    try:
        requests.post(f"http://127.0.0.1:{closed_port()}/w", data=b"x", timeout=2)
    except requests.RequestException as exc:
        outcome = classify(None, exc)
    assert outcome.error is ErrorKind.REFUSED
    assert outcome.detail == "ConnectionRefusedError: [Errno 111] Connection refused"


def closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when this returns: nothing listens there


def test_max_elapsed_gives_up_when_the_next_wait_would_pass_it():
    policy = RetryPolicy(max_elapsed=10.0, random=lambda: HALF)
    assert decide(policy, 503, elapsed=8.0, Retry_After="2").action is Action.RETRY
    assert decide(policy, 503, elapsed=8.0, Retry_After="3").action is Action.DROP_GAVE_UP
    assert decide(policy, 503, elapsed=10.5).action is Action.DROP_GAVE_UP
    assert decide(policy, 503, elapsed=9.9).action is Action.RETRY  # backoff of 15 ms still fits
    last = decide(policy, 503, attempt=12, elapsed=8.5)  # backoff 3.75 s would pass the limit: cut to 1.5 s
    assert last.action is Action.RETRY and last.delay_seconds == pytest.approx(1.5) and "last try" in last.reason
    gave_up = decide(policy, 503, attempt=13, elapsed=9.97)
    assert gave_up.action is Action.DROP_GAVE_UP and "gave up after 10.0s (max 10s)" in gave_up.reason
    assert decide(policy, 413, elapsed=99.0).action is Action.DROP_FINAL
    assert decide(policy, 200, elapsed=99.0).action is Action.SUCCESS


# --- configuration -------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    {"initial_delay": 0}, {"initial_delay": -1}, {"initial_delay": 6.0}, {"max_delay": 0.01},
    {"max_retry_after": -1}, {"max_attempts": 0}, {"max_elapsed": -1.0},
])
def test_invalid_configuration_is_rejected(kwargs):
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


def test_attempts_are_one_based_and_policy_is_frozen():
    with pytest.raises(ValueError):
        fixed().decide(0, classify(503, None), 0.0, NOW)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fixed().max_delay = 1.0  # type: ignore[misc]
    assert RetryPolicy() == RetryPolicy(random=lambda: 0.0)  # the random source is not part of the policy's value
