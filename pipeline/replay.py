"""`python -m pipeline.replay`: publish dead-lettered messages back to a topic, byte for byte.

After fixing whatever made them undecodable (or to retry after a transient failure), replay them
into the receiver's topic; the pipeline then archives them like any other message.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from google.cloud import pubsub_v1

from transforms.io.deadletters import read_dead_letters


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.replay", description=__doc__)
    parser.add_argument("--dead_letters", required=True,
                        help="file or glob of dead-letter files, e.g. ./archive/_dead_letters/date=*/*.ndjson")
    parser.add_argument("--topic", required=True, help="projects/PROJECT/topics/TOPIC to publish to")
    parser.add_argument("--dry_run", action="store_true", help="only list what would be replayed")
    args, beam_args = parser.parse_known_args(argv)
    FileSystems.set_options(PipelineOptions(beam_args))  # --s3_* / --project for remote dead letters
    records = read_dead_letters(args.dead_letters)
    if args.dry_run:
        for record in records:
            print(record.message_id, record.error)
        print(f"{len(records)} dead letters")
        return 0
    publisher = pubsub_v1.PublisherClient()
    futures = [publisher.publish(args.topic, r.data, **r.attributes) for r in records]
    for future in futures:
        future.result(timeout=60)
    print(f"replayed {len(futures)} dead letters to {args.topic}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
