from __future__ import annotations

import os

import pytest

import trunk_trace


@pytest.fixture(autouse=True)
def clean_trunk_trace(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory):
    """Every test starts from a fresh library state and an environment without our variables.

    It also runs outside any git checkout, so events carry no branch or sha
    tags of the repository the tests happen to run in.
    """
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    for name in list(os.environ):
        if name.startswith(("TRUNK_", "OTEL_", "TRACEPARENT", "GITHUB_", "GITLAB_", "CI")):
            monkeypatch.delenv(name, raising=False)
    trunk_trace.reset()
    yield
    trunk_trace.reset()
