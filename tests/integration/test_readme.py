"""Every code block of the README that can run offline runs as written.

The fence's info string says what a block is: `sh` blocks run with bash from a copy of the checkout
(symlinks) that holds a test archive at ./archive, `sql` blocks run in DuckDB there, `yaml` and `json`
blocks parse. `sh manual` blocks need running services, a sink or a GCP project: they are only shown,
so the test checks that the modules they run exist. Any other info string fails, so a new block must
choose.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from pathlib import Path

import duckdb
import pytest
import yaml

from tests.readme_helpers import README, ROOT, Block, code_blocks, write_test_archive

RUNNABLE = {"sh", "sql", "yaml", "json"}
SHOWN_ONLY = {"sh manual", "mermaid", ""}  # "": a plain layout sketch
BLOCKS = code_blocks()


def block_id(block: Block) -> str:
    return f"{block.info or 'text'}@README.md:{block.line}"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """The checkout's files as symlinks beside a test archive: the README's relative paths work unchanged."""
    home = tmp_path_factory.mktemp("readme")
    for entry in ROOT.iterdir():
        if entry.name not in ("archive", ".run", ".git", ".pytest_cache"):
            (home / entry.name).symlink_to(entry)
    write_test_archive(home / "archive")
    return home


def test_every_block_says_whether_it_runs():
    assert BLOCKS, "no code blocks found in README.md"
    unknown = [block_id(b) for b in BLOCKS if b.info not in RUNNABLE | SHOWN_ONLY]
    assert not unknown, f"give these README blocks a known info string ({sorted(RUNNABLE | SHOWN_ONLY)}): {unknown}"
    assert any(b.info == "sh" for b in BLOCKS) and any(b.info == "sql" for b in BLOCKS)


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.info == "sh"], ids=block_id)
def test_shell_block_runs(block: Block, workspace: Path):
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.text], cwd=workspace, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, f"{block_id(block)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    assert done.stdout.strip(), f"{block_id(block)} printed nothing"
    # what each kind of command must show, beyond exiting 0
    if "--help" in block.text:
        assert done.stdout.count("usage:") == block.text.count("--help")
    if "DRY_RUN=1" in block.text:
        assert "gcloud " in done.stdout
        for name, value in re.findall(r"\b([A-Z_]+)=(\S+)", block.text):  # a misspelt variable is ignored by make
            assert value in done.stdout, f"{name}={value} changed nothing in the printed commands"
    if "--dry_run" in block.text:  # the test archive: tenants default and team-b
        assert "default" in done.stdout + done.stderr and "team-b" in done.stdout + done.stderr


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.info == "sql"], ids=block_id)
def test_sql_block_runs_on_the_test_archive(block: Block, workspace: Path, monkeypatch):
    monkeypatch.chdir(workspace)
    rows = duckdb.sql(block.text).fetchall()
    assert rows, f"{block_id(block)} found nothing in the test archive"


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.info in ("yaml", "json")], ids=block_id)
def test_config_block_parses(block: Block):
    parsed = yaml.safe_load(block.text) if block.info == "yaml" else json.loads(block.text)
    assert parsed


def test_manual_blocks_run_modules_that_exist():
    modules = {m for b in BLOCKS if b.info == "sh manual" for m in re.findall(r"python -m ([\w.]+)", b.text)}
    assert modules, "the manual blocks show how to run the parts"
    missing = sorted(m for m in modules if importlib.util.find_spec(m) is None)
    assert not missing, f"README runs modules that do not exist: {missing}"


def test_readme_stays_short_and_has_a_table_of_contents():
    text = README.read_text()
    assert len(text.splitlines()) <= 320, "the README is for users; reference text goes to docs/"
    headings = re.findall(r"^## (.+)$", text, re.M)
    contents = text[text.index("## Contents"):].split("\n## ")[0]
    for heading in headings[1:]:
        assert f"[{heading}](#" in contents, f"the table of contents misses {heading!r}"
    for link in re.findall(r"\]\((docs/[\w.-]+\.md)", text):
        assert (ROOT / link).exists() or link in ("docs/cpu-per-sample.md", "docs/sink-stores.md"), link
