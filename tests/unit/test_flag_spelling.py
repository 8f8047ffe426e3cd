"""Both spellings of every flag (`--metrics-port`, `--metrics_port`) in the receiver, the pipeline and restore;
short usages with our flags first and Beam's after them."""

from __future__ import annotations

import pytest

from pipeline import launcher, restore
from receiver.config import parse_config
from transforms.core.flags import respell

TOPIC = "projects/local-project/topics/remote-write"


def test_respell_changes_only_known_flag_names_never_values() -> None:
    argv = ["--metrics-port=9", "--match", "--not-a-value_x", "--job-server-timeout=5", "--archive-path", "a-b_c",
            "--", "--metrics-port"]
    assert respell(argv, "_", {"metrics_port", "archive_path", "match"}) == [
        "--metrics_port=9", "--match", "--not-a-value_x", "--job-server-timeout=5", "--archive_path", "a-b_c",
        "--", "--metrics-port"]


def test_the_receiver_takes_underscores_too() -> None:
    dashed = parse_config(["--topic", TOPIC, "--max-body-bytes=1000", "--publish-timeout", "3"])
    underscored = parse_config(["--topic", TOPIC, "--max_body_bytes=1000", "--publish_timeout", "3"])
    assert dashed == underscored and underscored.max_body_bytes == 1000 and underscored.publish_timeout == 3.0


def test_the_pipeline_takes_dashes_too(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        launcher.main(["--input-subscription=projects/p/subscriptions/pq", "--metrics-port=70000",
                       "--window-size", "0"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "--input_subscription 'projects/p/subscriptions/pq'" in err and "has 2 characters" in err
    assert "--metrics_port must be a port number" in err and "--window_size must be a positive number" in err


def test_restore_takes_dashes_too(tmp_path, capsys) -> None:
    code = restore.main([f"--archive-path={tmp_path}", "--remote-write-url=http://127.0.0.1:1/w",
                         "--max-retry-duration=5s"])
    assert code == 2 and f"no archive files (tenant=*/date=*/hour=*/part-*) under {tmp_path}" in capsys.readouterr().err
    assert restore.main([f"--archive-path={tmp_path}", "--remote-write-url=http://127.0.0.1:1/w",
                         "--max-retry-duration=soon"]) == 2
    assert "--max_retry_duration" in capsys.readouterr().err


def help_text(main, capsys) -> str:
    try:
        assert main(["--help"]) == 0  # restore returns its exit code
    except SystemExit as exc:  # the pipeline exits
        assert exc.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("main,ours", [(launcher.main, "--input_subscription"), (restore.main, "--archive_path")])
def test_help_is_short_at_the_top_with_our_flags_before_beams(main, ours: str, capsys) -> None:
    text = help_text(main, capsys)
    usage = text.split("\n\n", 1)[0]
    assert len(usage.splitlines()) <= 2 and ours in usage and "--temp_location" not in usage
    assert text.index(f"  {ours}") < text.index("Beam: runner") < text.index("  --temp_location")


def test_the_receiver_usage_is_one_line(capsys) -> None:
    with pytest.raises(SystemExit):
        parse_config(["--help"])
    usage = capsys.readouterr().out.split("\n\n", 1)[0]
    assert usage == "usage: python -m receiver --topic=projects/PROJECT/topics/NAME [options]"


def test_restore_help_speaks_of_restore_not_of_subscriptions(capsys) -> None:
    text = help_text(restore.main, capsys)
    url_help = text[text.index("  --remote_write_url"):text.index("  --remote_write_config")]
    assert "subscription" not in url_help.lower() and "selected samples" in url_help


def test_the_pipeline_description_names_both_formats_and_forwarding(capsys) -> None:
    description = help_text(launcher.main, capsys).split("\n\n")[1]
    assert "NDJSON" in description and "Parquet" in description and "forward" in description
