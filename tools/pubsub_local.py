"""`make pubsub`: the Pub/Sub emulator alone, for running the receiver and the pipeline by hand.

Starts Google's emulator on 127.0.0.1, creates the topic the receiver publishes to and the subscription
the pipeline reads, prints the environment variable and the commands to run in other terminals, and runs
until Ctrl-C (which stops the emulator; its data lives only as long as it runs).
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path

from tools import services
from transforms.core import pubsub_names
from transforms.core.flags import respell


def instructions(host: str, topic: str, subscription: str, python: str) -> str:
    return (f"Pub/Sub emulator on {host}: topic {topic}, subscription {subscription}\n"
            "In each terminal that runs the receiver or the pipeline:\n"
            f"  export PUBSUB_EMULATOR_HOST={host}\n"
            "Then:\n"
            f"  {python} -m receiver --topic={topic}\n"
            f"  {python} -m pipeline --runner=DirectRunner --input_subscription={subscription} "
            "--archive_path=./archive\n"
            "Ctrl-C here stops the emulator.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make pubsub", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8085, help="emulator port (default 8085; make pubsub PUBSUB_PORT=)")
    parser.add_argument("--project", default="local-project", help="project id (default local-project)")
    parser.add_argument("--topic", default="remote-write", help="topic name (default remote-write)")
    parser.add_argument("--subscription", default="remote-write-pipeline",
                        help="subscription name (default remote-write-pipeline)")
    known = {option[2:] for action in parser._actions for option in action.option_strings if option.startswith("--")}
    args = parser.parse_args(respell(sys.argv[1:] if argv is None else argv, "-", known))
    topic = f"projects/{args.project}/topics/{args.topic}"
    subscription = f"projects/{args.project}/subscriptions/{args.subscription}"
    interrupted = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal interrupted
        interrupted = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    emulator = None
    with tempfile.TemporaryDirectory(prefix="make-pubsub-") as work:
        try:
            for path, kind in ((topic, "topic"), (subscription, "subscription")):
                problem = pubsub_names.problem(path, kind)
                if problem:
                    raise services.ServiceError(f"{kind} {problem}")
            if services.port_in_use(args.port):
                raise services.ServiceError(f"port {args.port} is already in use (another emulator, or make run?); "
                                            "stop it or pick another: make pubsub PUBSUB_PORT=...")
            emulator, host = services.start_pubsub_emulator(Path(work), args.port)
            services.create_topic_and_subscription(host, topic, subscription)
            python = str(services.ROOT / ".venv" / "bin" / "python")
            print(instructions(host, topic, subscription, python if Path(python).exists() else sys.executable),
                  flush=True)
            while not interrupted:
                if not emulator.alive():
                    raise services.ServiceError(f"the emulator exited; log:\n{emulator.log_tail()}")
                time.sleep(0.2)
            return 0
        except services.ServiceError as exc:
            print(f"make pubsub: {exc}", file=sys.stderr)
            return 1
        finally:
            if emulator is not None:
                emulator.stop()
                print("stopped: pubsub-emulator")


if __name__ == "__main__":
    sys.exit(main())
