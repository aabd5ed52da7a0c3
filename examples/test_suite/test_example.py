"""An example test suite, recorded by trunk_trace's pytest plugin. Needs no account.

Run it from this directory (``pytest.ini`` enables the plugin)::

    pytest              # one event per test under a "pytest" root
    pytest -n 2         # with pytest-xdist: the same events, one chain

At exit the timing summary is printed to stderr; ``TRUNK_TRACE_FILE=events.jsonl``
keeps every event.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

import trunk_trace
from trunk_trace import track


def build_index(words: list[str]) -> dict[str, int]:
    # Code under test may time its own steps: they nest under the test's event.
    with track("build index"):
        time.sleep(0.01)
        return {word: len(word) for word in words}


def test_index() -> None:
    assert build_index(["trunk", "trace"]) == {"trunk": 5, "trace": 5}


@pytest.mark.parametrize("word", ["a", "bb", "ccc"])
def test_lengths(word: str) -> None:
    assert build_index([word])[word] == len(word)


def test_child_process_joins_the_chain() -> None:
    # A child process started during a test nests under the test's event.
    code = "import trunk_trace\nwith trunk_trace.track('child step'): pass"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "TRUNK_TRACE_SUMMARY": "0"})


def test_tags_its_own_event() -> None:
    event = trunk_trace.current()  # the test's own event
    assert event is not None and event.kind == "test"
    event.tag("dataset", "small")


@pytest.mark.skip(reason="shows a SKIPPED test")
def test_skipped() -> None:
    raise AssertionError("never runs")


@pytest.mark.xfail(reason="shows an expected failure (SKIPPED, tag outcome=xfailed)")
def test_known_bug() -> None:
    assert build_index([]) == {"": 0}
