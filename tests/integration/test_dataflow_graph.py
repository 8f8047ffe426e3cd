"""The Dataflow job graph builds offline (--dry_run) and holds what the streaming design needs."""

from __future__ import annotations

import os

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_runner_api_pb2

from pipeline.graph import build_streaming
from pipeline.options import ArchiveOptions
from transforms.core.sink.config import from_document

# Dataflow's --update matches steps by name: these must not change silently. (A job from before the
# per-window types side input was removed needs --transform_name_mapping for Archive/MetadataOnly,
# Archive/ExtractTypes and Archive/MergeTypes, mapped to "": docs/deploy.md.)
STABLE_STEPS = {
    "ReadPubSub", "WindowByPublishTime", "WindowByPublishTime/FixedWindows", "Archive", "Archive/DecodeToLines",
    "Archive/GroupByPartition",
    "Archive/WriteFiles", "Archive/KeyDeadLetters", "Archive/GroupDeadLetters", "Archive/WriteDeadLetters",
    "Archive/AllPaths",
    # one branch per sink, named after the sink (a sink's name is stable: given, or derived from its URL)
    "ReadPubSub-vm", "Forward-vm", "Forward-vm/ShardBySeries", "Forward-vm/BatchPerShard", "Forward-vm/SendInOrder",
    "Forward-vm/WriteUndecodable",
}


def test_dataflow_graph_builds_offline_with_native_pubsub_read(gcs):  # noqa: F811
    assert os.environ.get("STORAGE_EMULATOR_HOST")
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    storage.Client(project="test-project", credentials=AnonymousCredentials()).create_bucket("dataflow-staging")
    options = PipelineOptions([
        "--runner=DataflowRunner", "--dry_run=True", "--project=test-project", "--region=us-central1",
        "--temp_location=gs://dataflow-staging/tmp", "--staging_location=gs://dataflow-staging/staging",
        "--streaming", "--input_subscription=projects/test-project/subscriptions/sub",
        "--archive_path=gs://archive-bucket/prom", "--window_size=60", *gcs,
    ])
    p = beam.Pipeline(options=options)
    sinks = from_document('{"remote_write": [{"url": "http://vm:8428/api/v1/write", "name": "vm"}, '
                          '{"url": "http://prom:9090/api/v1/write", "name": "prom", "order": "strict"}]}')
    build_streaming(p, options.view_as(ArchiveOptions), sinks)
    result = p.run()
    transforms = result.job.proto_pipeline.components.transforms
    names = {t.unique_name for t in transforms.values()}
    assert STABLE_STEPS <= names
    # no side input on the conversion: a streaming runner would hold each message until its window closes
    decode = next(t for t in transforms.values() if t.unique_name == "Archive/DecodeToLines")
    assert len(decode.inputs) == 1, dict(decode.inputs)
    urns = {t.spec.urn for t in transforms.values()}
    assert "beam:transform:pubsub_read:v1" in urns  # Beam's native read, which Dataflow replaces
    assert "beam:transform:window_into:v1" in urns
    assert "beam:transform:group_by_key:v1" in urns
    reads = [t for t in transforms.values() if t.spec.urn == "beam:transform:pubsub_read:v1"]
    assert len(reads) == 3, "the archive and each sink read their own subscription"
    # per-key state keeps each shard's requests in order across bundles and workers
    batch = next(t for t in transforms.values() if t.unique_name == "Forward-vm/BatchPerShard")
    assert any(transforms[sub].spec.urn == "beam:transform:pardo:v1" for sub in batch.subtransforms)
    # a strict sink: one stateful step per (tenant, shard), its delivered record and held chunks in keyed state
    send = next(t for t in transforms.values() if t.unique_name == "Forward-prom/SendInOrder")
    payload = beam_runner_api_pb2.ParDoPayload.FromString(send.spec.payload)
    assert {"chunks", "held", "meta", "snapshot", "journal"} <= set(payload.state_specs)
    assert "ts-flush" in payload.timer_family_specs
