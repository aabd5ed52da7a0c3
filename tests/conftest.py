from __future__ import annotations

import os

import pytest

import trunk_trace


@pytest.fixture(autouse=True)
def clean_trunk_trace(monkeypatch: pytest.MonkeyPatch):
    """Every test starts from a fresh library state and an environment without our variables."""
    for name in list(os.environ):
        if name.startswith(("TRUNK_", "OTEL_", "TRACEPARENT", "GITHUB_", "GITLAB_", "CI")):
            monkeypatch.delenv(name, raising=False)
    trunk_trace.reset()
    yield
    trunk_trace.reset()
