"""What many tests share: clean environments for child processes, and reading events back."""

from __future__ import annotations

import os
from pathlib import Path

from trunk_trace.exporters.jsonl import load_events

# Our own variables and the CI's: a child process must see only what a test gives it.
FOREIGN = ("TRUNK_", "CI", "GITHUB_", "OTEL_", "TRACEPARENT", "NOX_", "PYTEST_")


def clean_env(**extra: str) -> dict:
    env = {name: value for name, value in os.environ.items() if not name.startswith(FOREIGN)}
    env.update(extra)
    return env


def events_in(path: Path | str) -> list[dict]:
    """The wire events of a JSON Lines file, in order ([] when it does not exist)."""
    return load_events(str(path)) if os.path.exists(path) else []


def by_key(events: list[dict]) -> dict[str, dict]:
    """Events by sequence key; each key must appear once."""
    keyed: dict[str, dict] = {}
    for event in events:
        key = event["sequence"]["key"]
        assert key not in keyed, f"two events for {key}"
        keyed[key] = event
    return keyed


def tags_of(event: dict) -> dict:
    return {tag["k"]: tag["v"] for tag in event["payload"]["tags"]}


def traced_env(events_file: Path | str, **extra: str) -> dict:
    """A clean environment that writes events to *events_file* and prints no summary."""
    return clean_env(TRUNK_TRACE_FILE=str(events_file), TRUNK_TRACE_SUMMARY="0", **extra)
