"""Every example in examples/ runs, and shows what the README says it shows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import clean_env

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# Files run by a tool of their own (invoke, nox, pytest) have their own tests.
TOOL_FILES = {"tasks.py", "noxfile.py", "conftest.py"}
SCRIPTS = sorted(p for p in EXAMPLES.glob("*.py") if p.name not in TOOL_FILES and not p.name.startswith("test_"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_example_script_runs(script, tmp_path):
    events_file = tmp_path / "events.jsonl"
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env=clean_env(TRUNK_TRACE_FILE=str(events_file)),
    )
    assert result.returncode == 0, result.stderr
    assert "trunk_trace:" in result.stderr  # the timing summary
    assert "Traceback" not in result.stderr
    events = [json.loads(line)["event"] for line in events_file.read_text().splitlines()]
    assert events and len({e["chainId"] for e in events}) == 1


def test_build_example_shape(tmp_path):
    events_file = tmp_path / "events.jsonl"
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "build.py")], capture_output=True, text=True, timeout=120,
        env=clean_env(TRUNK_TRACE_FILE=str(events_file)),
    )
    assert result.returncode == 0
    events = {json.loads(line)["event"]["sequence"]["key"]: json.loads(line)["event"] for line in events_file.read_text().splitlines()}
    assert {"build", "build/fetch dependencies", "build/compile", "build/compile/compile parser", "build/lint", "build/tests", "build/tests/test shard", "build/package"} <= set(events)
    assert events["build/compile/compile parser"]["parent"]["sequenceKey"] == "build/compile"
    summary_lines = [line.strip() for line in result.stderr.splitlines()]
    assert any(line.startswith("test shard") and "x3" in line for line in summary_lines)
