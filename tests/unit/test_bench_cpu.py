"""The pure parts of `make bench-cpu`: /proc stat parsing, tree sums, per-million arithmetic, profile grouping."""

from __future__ import annotations

import math
import os

import pytest

from bench import profile_groups
from bench.load import build_stream, stream_offsets
from bench.proc_cpu import ProcStat, ProcStatError, parse_stat, per_million, ratio, tree_ticks
from transforms.core.protocol import MAX_DECOMPRESSED, Protocol
from transforms.core.wire import codec, snappy_block

ROOT = "/src/project"


def stat_line(pid: int, comm: str, ppid: int, utime: int, stime: int, cutime: int = 0, cstime: int = 0) -> str:
    # fields 3..13 (state .. cmajflt), then utime stime cutime cstime, then the rest
    return (f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194560 100 0 0 0 "
            f"{utime} {stime} {cutime} {cstime} 20 0 4 0 1000 1000000 200 18446744073709551615")


def test_parse_stat_reads_the_cpu_fields_after_a_command_with_spaces_and_parentheses() -> None:
    stat = parse_stat(stat_line(4242, "gunicorn: worker) [x (y)]", 17, 150, 30, 7, 3))
    assert stat == ProcStat(pid=4242, ppid=17, utime=150, stime=30, cutime=7, cstime=3)
    assert stat.ticks == 190


@pytest.mark.parametrize("text", ["", "42 (python) S 1 2 3", "42 python S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15",
                                  stat_line(1, "x", 0, 1, 2).replace(" 1 2 0 0 20", " 1 two 0 0 20")])
def test_parse_stat_rejects_what_is_not_a_stat_line(text: str) -> None:
    with pytest.raises(ProcStatError):
        parse_stat(text)


def test_parse_stat_of_this_process() -> None:
    with open("/proc/self/stat") as handle:
        stat = parse_stat(handle.read())
    assert stat.pid == os.getpid() and stat.ppid == os.getppid()


def test_tree_ticks_counts_the_root_and_every_descendant_once() -> None:
    stats = [ProcStat(1, 0, 1000, 1000, 0, 0),  # init: not in the tree
             ProcStat(10, 1, 5, 5, 40, 10),  # gunicorn master, with reaped workers' time
             ProcStat(11, 10, 100, 20, 0, 0),  # worker
             ProcStat(12, 10, 200, 30, 0, 0),  # worker
             ProcStat(13, 12, 1, 1, 0, 0),  # a worker's child
             ProcStat(20, 1, 999, 999, 0, 0)]  # unrelated
    assert tree_ticks(stats, 10) == 10 + 50 + 120 + 230 + 2
    assert tree_ticks(stats, 12) == 232
    assert tree_ticks(stats, 99) == 0  # gone: nothing, not an error


def test_per_million_and_ratio() -> None:
    assert per_million(2.0, 500_000) == pytest.approx(4.0)
    assert per_million(1.74, 1_000_000) == pytest.approx(1.74)
    assert math.isnan(per_million(3.0, 0))
    assert ratio(4.24, 1.74) == pytest.approx(2.4368, rel=1e-3)
    assert math.isnan(ratio(1.0, 0.0))


RAW = """\
process 7:"python -m receiver";run (/v/site-packages/gunicorn/arbiter.py) 5
process 8:"worker";handle (/src/project/receiver/views.py);decode (/src/project/transforms/core/wire/batch.py) 30
process 8:"gunicorn worker";_worker (/u/python3.11/concurrent/futures/thread.py);wait (/u/python3.11/threading.py) 40
process 8:"gunicorn worker";publish (/v/site-packages/google/cloud/pubsub_v1/publisher/client.py) 20
process 8:"gunicorn worker" 5
"""


def test_parse_raw_and_summarize_charge_each_stack_to_its_innermost_frame() -> None:
    stacks = profile_groups.parse_raw(RAW)
    assert [count for _, count in stacks] == [5, 30, 40, 20, 5]
    profile = profile_groups.summarize(stacks, ROOT)
    assert profile.samples == 100
    assert profile.groups == {"threading + queues": 40, "our wire codec (compiled decode/encode)": 30,
                              "Pub/Sub client + gRPC + protobuf": 20, "gunicorn": 5,
                              profile_groups.NO_PYTHON_FRAME: 5}
    assert profile.callers == {"our wire codec (compiled decode/encode)": 30, "Pub/Sub client + gRPC + protobuf": 20,
                               "gunicorn": 5,
                               # the wait has no caller outside the standard library: it stays a thread wait
                               "threading + queues": 40, profile_groups.NO_PYTHON_FRAME: 5}
    assert profile.functions["decode (transforms/core/wire/batch.py)"] == 30
    assert profile.functions["wait (threading.py)"] == 40
    assert profile.functions["publish (google/cloud/pubsub_v1/publisher/client.py)"] == 20
    assert profile.shares(profile.groups, 2) == [("threading + queues", 0.4),
                                                 ("our wire codec (compiled decode/encode)", 0.3)]


@pytest.mark.parametrize("frame, group", [
    ("f (/src/project/pipeline/local_loop.py)", "our pipeline code (loops, restore job)"),
    ("f (/src/project/transforms/io/pubsub.py)", "our I/O layer (Pub/Sub pull/ack, files, HTTP sink)"),
    ("f (/src/project/bench/load.py)", "ours: bench"),
    ("f (/v/site-packages/apache_beam/runners/common.py)", "Beam"),
    ("f (/v/site-packages/werkzeug/serving.py)", "Flask/Werkzeug"),
    ("f (/v/site-packages/six.py)", "library: six"),
    ("f (/usr/lib/python3.11/http/client.py)", "HTTP + sockets (stdlib)"),
    ("f (/usr/lib/python3.11/inspect.py)", "stdlib: inspect"),
    ("_find_and_load (<frozen importlib._bootstrap>)", "imports"),
    ("isdir (<frozen genericpath>)", "filesystem (os, os.path)"),
    ("f (/v/lib/python3.11/site-packages/threading_extra/x.py)", "library: threading_extra"),
    ("f (/elsewhere/thing.py)", "other: /elsewhere/thing.py"),
    ("not a frame", "other"),
])
def test_group_of(frame: str, group: str) -> None:
    assert profile_groups.group_of(frame, ROOT) == group


def test_caller_group_charges_a_standard_library_leaf_to_who_asked_for_it() -> None:
    frames = ["main (/src/project/pipeline/local_loop.py)",
              "PipelineOptions.get_all_options (/v/site-packages/apache_beam/options/pipeline_options.py)",
              "ArgumentParser.__init__ (/u/python3.11/argparse.py)", "find (/u/python3.11/gettext.py)",
              "exists (<frozen genericpath>)"]
    assert profile_groups.group_of(frames[-1], ROOT) == "filesystem (os, os.path)"
    assert profile_groups.caller_group_of(frames, ROOT) == "Beam"
    assert profile_groups.caller_group_of(frames[2:], ROOT) == "filesystem (os, os.path)"


def test_parse_raw_rejects_lines_without_a_count() -> None:
    with pytest.raises(profile_groups.ProfileFormatError, match="line 2"):
        profile_groups.parse_raw("a (x.py) 3\na (x.py) three\n")


def test_merge_adds_profiles() -> None:
    one = profile_groups.summarize(profile_groups.parse_raw(RAW), ROOT)
    merged = profile_groups.merge([one, one])
    assert merged.samples == 200 and merged.groups["gunicorn"] == 10


def test_build_stream_makes_requests_of_the_asked_series_count() -> None:
    bodies = build_stream(0, 2, 1_700_000_000_000, shape="node", series=2000)
    for body in bodies:
        message = codec.parse(snappy_block.decompress(body, MAX_DECOMPRESSED), Protocol.V1)
        assert len(message.timeseries) == 2000
        assert len({tuple((label.name, label.value) for label in s.labels) for s in message.timeseries}) == 2000


def test_paced_streams_take_turns_over_one_interval() -> None:
    # 2 senders x 4 connections at 60 requests/s: each stream every 8/60 s, one request every 1/60 s in all
    offsets = stream_offsets([4, 4], 8 / 60)
    flat = [o for process in offsets for o in process]
    assert [len(process) for process in offsets] == [4, 4]
    assert flat == pytest.approx([k / 60 for k in range(8)])
    assert stream_offsets([1, 1], 0.0) == [[0.0], [0.0]]  # unpaced: everything at once
