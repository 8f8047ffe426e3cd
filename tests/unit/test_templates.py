"""The Flex Template stays in step with the pipeline's options and the pinned Beam version."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
from pathlib import Path

from pipeline.options import ArchiveOptions, SinkOptions
from transforms.core.archive.format import FORMATS

ROOT = Path(__file__).resolve().parents[2]
# Options that only make sense for the local runner, so the Dataflow template leaves them out.
LOCAL_ONLY = {"max_batch_samples", "metrics_port"}


def archive_flags() -> dict[str, argparse.Action]:
    parser = argparse.ArgumentParser()
    ArchiveOptions._add_argparse_args(parser)
    SinkOptions._add_argparse_args(parser)
    return {a.dest: a for a in parser._actions if a.dest != "help"}


def test_every_metadata_parameter_is_a_pipeline_option_and_every_option_is_declared():
    metadata = json.loads((ROOT / "templates" / "metadata.json").read_text())
    declared = {p["name"]: p for p in metadata["parameters"]}
    flags = archive_flags()
    assert set(declared) <= set(flags), "metadata.json names an option the pipeline does not have"
    assert set(flags) - LOCAL_ONLY == set(declared), "a pipeline option is missing from metadata.json"
    for name, param in declared.items():
        assert param["label"] and param["helpText"] and param["regexes"], name
        for regex in param["regexes"]:
            re.compile(regex)
    # the one option the job cannot run without is required in the template too
    assert declared["input_subscription"]["isOptional"] is False


def test_template_regexes_accept_defaults_and_reject_local_paths():
    declared = {p["name"]: p for p in json.loads((ROOT / "templates" / "metadata.json").read_text())["parameters"]}
    archive = re.compile(declared["archive_path"]["regexes"][0])
    assert archive.match("gs://bucket/prom") and archive.match("s3://bucket")
    assert not archive.match("./archive")  # worker disks are temporary
    flags = archive_flags()
    for name in ("window_size", "max_lines_per_file", "allowed_lateness", "archive_format"):
        assert re.match(declared[name]["regexes"][0], str(flags[name].default)), name
    assert all(re.match(declared["archive_format"]["regexes"][0], name) for name in FORMATS)
    assert not re.match(declared["archive_format"]["regexes"][0], "parquet-ish")


def test_the_subscription_regex_is_the_pipelines_rule():
    from transforms.core.pubsub_names import problem

    declared = {p["name"]: p for p in json.loads((ROOT / "templates" / "metadata.json").read_text())["parameters"]}
    regex = re.compile(declared["input_subscription"]["regexes"][0])
    for path in ("projects/local-project/subscriptions/remote-write-pipeline", "projects/p/subscriptions/pq",
                 "projects/p/subscriptions/9lives", "projects/p/subscriptions/a b", "projects/p/subscriptions/goog-x",
                 "projects/p/subscriptions/a.b_c~d%e+f", "projects/p/topics/abc",
                 "projects/p/subscriptions/" + "s" * 256):
        assert bool(regex.match(path)) == (problem(path, "subscription") is None), path


def test_beam_version_is_pinned_identically_in_setup_and_image():
    setup_version = re.search(r'BEAM_VERSION = "([^"]+)"', (ROOT / "setup.py").read_text()).group(1)
    image_version = re.search(r"ARG BEAM_VERSION=(\S+)", (ROOT / "templates" / "Dockerfile").read_text()).group(1)
    assert setup_version == image_version
    constraints = (ROOT / "requirements" / "constraints.txt").read_text()
    assert f"apache-beam=={setup_version}" in constraints


def test_images_ship_the_compiled_module_as_a_wheel_built_once():
    """Both images build transforms.core.wire._wire in a stage with a compiler and install the wheel; Dataflow
    workers get that wheel too, and an sdist carries the C headers."""
    setup_sources = re.search(r'WIRE_PARTS = \(([^)]*)\)', (ROOT / "setup.py").read_text()).group(1)
    for part in re.findall(r'"([^"]*)"', setup_sources):
        assert (ROOT / "transforms" / "core" / "wire" / f"_wire{part}.c").exists(), part
    for name in ("Dockerfile", "receiver.Dockerfile"):
        text = (ROOT / "templates" / name).read_text()
        assert "pip wheel" in text and "COPY --from=wheel" in text, name
    flex = (ROOT / "templates" / "Dockerfile").read_text()
    assert "FLEX_TEMPLATE_PYTHON_EXTRA_PACKAGES" in flex and "FLEX_TEMPLATE_PYTHON_SETUP_FILE" not in flex
    assert "include transforms/core/wire/*.h" in (ROOT / "MANIFEST.in").read_text()


def template_parameters() -> dict[str, dict]:
    return {p["name"]: p for p in json.loads((ROOT / "templates" / "metadata.json").read_text())["parameters"]}


def test_every_default_the_template_states_is_the_pipeline_options_default():
    flags = archive_flags()
    for name, param in template_parameters().items():
        stated = re.search(r"Default (\S+?)\.?(?:\s|$)", param["helpText"])
        if stated and not stated.group(1)[0].isupper():  # "Default ARCHIVE_PATH/..." names a derived default
            assert str(flags[name].default).removesuffix(".0").lower() == stated.group(1).lower(), name


def makefile_parameter_variables() -> dict[str, str]:
    """The Makefile's TEMPLATE_PARAMETERS list: template parameter -> make variable."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    listed = re.search(r"^TEMPLATE_PARAMETERS := (.*)$", text, re.M).group(1).split()
    return dict(item.split(":") for item in listed)


def dry_run(*variables: str, target: str = "deploy") -> str:
    done = subprocess.run(["make", "-s", "-C", str(ROOT), target, "DRY_RUN=1", "PROJECT=p", *variables],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_deploy_has_a_variable_for_every_template_parameter():
    variables = makefile_parameter_variables()
    assert set(variables) == set(template_parameters()), "the Makefile's TEMPLATE_PARAMETERS and metadata.json differ"
    values = {name: f"value-of-{name}" for name in variables}
    values["remote_write_url"] = "http://a:8428/api/v1/write,http://b:9090/api/v1/write"  # fan-out: a comma
    values["remote_write_header"] = "X-Team: infra"  # a space
    printed = dry_run(*(f"{variables[name]}={value}" for name, value in values.items()))
    [command] = [shlex.split(line) for line in printed.splitlines()]
    assert command[:4] == ["gcloud", "dataflow", "flex-template", "run"], printed
    [parameters] = [arg.removeprefix("--parameters=") for arg in command if arg.startswith("--parameters=")]
    assert parameters.startswith("^~^"), "gcloud must split at ~, since remote_write_url holds commas"
    assert dict(item.split("=", 1) for item in parameters[3:].split("~")) == values


def test_make_deploy_passes_only_what_is_set_and_the_required_parameters_by_default():
    [command] = [shlex.split(line) for line in dry_run().splitlines()]
    assert "--project=p" in command and "--region=us-central1" in command
    assert "--template-file-gcs-location=gs://p-dataflow/templates/archive-pipeline.json" in command
    assert "--service-account-email=rw-dataflow@p.iam.gserviceaccount.com" in command
    [parameters] = [arg.removeprefix("--parameters=^~^") for arg in command if arg.startswith("--parameters=")]
    assert dict(item.split("=", 1) for item in parameters.split("~")) == {
        "input_subscription": "projects/p/subscriptions/remote-write-pipeline", "archive_path": "gs://p-dataflow/archive"}
    required = {name for name, p in template_parameters().items() if not p.get("isOptional", False)}
    assert required == {"input_subscription", "archive_path"}


def test_make_template_and_receiver_image_dry_runs_print_their_commands():
    build, stage = [shlex.split(line) for line in dry_run(target="template").splitlines()]
    assert build[:3] == ["gcloud", "builds", "submit"]
    assert ("--substitutions=_IMAGE=us-central1-docker.pkg.dev/p/remote-write/archive-pipeline:latest,"
            "_DOCKERFILE=templates/Dockerfile") in build
    assert stage[:4] == ["gcloud", "dataflow", "flex-template", "build"]
    assert "--metadata-file=templates/metadata.json" in stage
    [receiver] = [shlex.split(line) for line in dry_run(target="receiver-image").splitlines()]
    assert ("--substitutions=_IMAGE=us-central1-docker.pkg.dev/p/remote-write/receiver:latest,"
            "_DOCKERFILE=templates/receiver.Dockerfile") in receiver


def test_the_deploy_guide_lists_every_template_parameter_with_its_make_variable():
    guide = (ROOT / "docs" / "deploy.md").read_text()
    rows = dict(re.findall(r"^\| `([a-z0-9_]+)` \| `([A-Z0-9_]+)` \|", guide, re.M))
    assert rows == makefile_parameter_variables()
