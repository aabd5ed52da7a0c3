"""Configuration from the environment and from configure()."""

from __future__ import annotations

import logging

import attrs
import pytest

import trunk_trace
from trunk_trace import Config, track
from trunk_trace.testing import InMemoryExporter


def test_defaults():
    config = Config.from_env({})
    assert config.enabled and config.token is None and config.api_address == "https://api.trunk.io"
    assert config.exit_timeout == 2.0 and config.summary_enabled and config.handle_sigterm


def test_environment_is_read():
    config = Config.from_env({
        "TRUNK_API_TOKEN": "secret-token",
        "TRUNK_PUBLIC_API_ADDRESS": "http://127.0.0.1:8080",
        "TRUNK_TRACE_DISABLED": "yes",
        "TRUNK_TRACE_SUMMARY": "on",
        "TRUNK_TRACE_FILE": "/tmp/events.jsonl",
        "TRUNK_TRACE_EXIT_TIMEOUT": "0.5",
        "TRUNK_TRACE_PLATFORM": "jenkins",
        "TRUNK_TRACE_SIGTERM": "0",
    })
    assert config.token == "secret-token" and config.api_address == "http://127.0.0.1:8080"
    assert not config.enabled and config.summary is True and config.file == "/tmp/events.jsonl"
    assert config.exit_timeout == 0.5 and config.platform == "jenkins" and not config.handle_sigterm


def test_token_never_in_repr():
    config = Config.from_env({"TRUNK_API_TOKEN": "secret-token"})
    assert "secret-token" not in repr(config) and "secret-token" not in str(config)


@pytest.mark.parametrize(
    "name, value",
    [("TRUNK_TRACE_EXIT_TIMEOUT", "soon"), ("TRUNK_TRACE_EXIT_TIMEOUT", "-1"), ("TRUNK_TRACE_SUMMARY", "maybe"),
     ("TRUNK_TRACE_SPOOL_MAX_MB", "lots"), ("TRUNK_TRACE_SPOOL_MAX_MB", "-5")],
)
def test_bad_environment_values_are_reported_once_and_ignored(name, value, caplog):
    with caplog.at_level(logging.WARNING, logger="trunk_trace"):
        config = Config.from_env({name: value})
        Config.from_env({name: value})
    assert config == Config()
    assert [r.getMessage() for r in caplog.records if name in r.getMessage()].__len__() == 1


def test_bad_api_address_in_environment_falls_back(caplog):
    config = Config.from_env({"TRUNK_PUBLIC_API_ADDRESS": "http://api.example.com"})
    assert config.api_address == "https://api.trunk.io"
    assert "loopback" in caplog.text


@pytest.mark.parametrize(
    "settings, error, words",
    [
        ({"exit_timeout": -1}, ValueError, "exit_timeout"),
        ({"exit_timeout": "2"}, ValueError, "exit_timeout"),
        ({"api_address": "http://example.com"}, ValueError, "loopback"),
        ({"api_address": "ftp://x"}, ValueError, "api_address"),
        ({"api_address": "https://user:pw@api.trunk.io"}, ValueError, "credentials"),
        ({"summary": "yes"}, TypeError, "summary"),
        ({"token": ""}, ValueError, "token"),
        ({"exporters": [object()]}, TypeError, "exporters"),
        ({"colour": True}, TypeError, "colour"),
    ],
)
def test_configure_rejects_bad_settings(settings, error, words):
    with pytest.raises(error, match=words):
        trunk_trace.configure(**settings)


def test_configure_overrides_environment(monkeypatch):
    monkeypatch.setenv("TRUNK_TRACE_PLATFORM", "from-env")
    config = trunk_trace.configure(summary=False)
    assert config.platform == "from-env" and config.summary is False
    assert attrs.evolve(config, platform="x").platform == "x"


def test_configure_flushes_earlier_events_to_earlier_outputs():
    first, second = InMemoryExporter(), InMemoryExporter()
    trunk_trace.configure(exporters=[first], summary=False)
    with track("before"):
        pass
    trunk_trace.configure(exporters=[second], summary=False)
    with track("after"):
        pass
    trunk_trace.flush()
    assert [e["sequence"]["name"] for e in first.events] == ["before"] and first.shut_down
    assert [e["sequence"]["name"] for e in second.events] == ["after"]


def test_flush_and_shutdown_are_idempotent_and_restartable():
    exporter = InMemoryExporter()
    trunk_trace.configure(exporters=[exporter], summary=False)
    assert trunk_trace.flush(timeout=1) is True  # nothing yet
    with track("x"):
        pass
    assert trunk_trace.flush(timeout=1) is True
    trunk_trace.shutdown(timeout=1)
    trunk_trace.shutdown(timeout=1)
    assert exporter.shut_down and len(exporter.events) == 1


def test_a_failing_exporter_never_reaches_the_build(caplog):
    class Broken:
        def export(self, records):
            raise RuntimeError("exporter bug")

        def force_flush(self, timeout=None):
            raise RuntimeError("flush bug")

        def shutdown(self, timeout=None):
            raise RuntimeError("shutdown bug")

    good = InMemoryExporter()
    trunk_trace.configure(exporters=[Broken(), good], summary=False)
    for _ in range(3):
        with track("x"):
            pass
    trunk_trace.flush()
    trunk_trace.shutdown()
    assert len(good.events) == 3  # the other exporter still got everything
    messages = [r.getMessage() for r in caplog.records]
    assert sum("Broken.export failed" in m for m in messages) == 1  # once, not per batch
    assert any("Broken.shutdown failed" in m for m in messages)


def test_outputs_that_are_not_configured_are_not_loaded():
    import subprocess
    import sys

    code = (
        "import sys, trunk_trace\n"
        "trunk_trace.configure(summary=False)\n"
        "with trunk_trace.track('x'):\n    pass\n"
        "trunk_trace.flush()\n"
        "print(','.join(m for m in ('urllib3', 'trunk_trace.exporters.http', 'trunk_trace.exporters.otlp', "
        "'trunk_trace.exporters.chrome') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60).stdout
    assert out.strip() == ""


# --- one bad value costs only itself ---

OTHERS = {
    "TRUNK_TRACE_FILE": "/tmp/events.jsonl",
    "TRUNK_TRACE_SPOOL_DIR": "/tmp/spool",
    "TRUNK_API_TOKEN": "secret-token",
    "TRUNK_TRACE_SUMMARY": "0",
    "TRUNK_TRACE_EXIT_TIMEOUT": "0.5",
}


@pytest.mark.parametrize(
    "name, value",
    [("TRUNK_PUBLIC_API_ADDRESS", "http://127.0.0.1:abc"), ("TRUNK_PUBLIC_API_ADDRESS", "http://127.0.0.1:99999"),
     ("TRUNK_PUBLIC_API_ADDRESS", "ftp://api.trunk.io"), ("TRUNK_PUBLIC_API_ADDRESS", "http://api.example.com"),
     ("TRUNK_PUBLIC_API_ADDRESS", "https://[::1"), ("TRUNK_TRACE_SPOOL_MAX_MB", "inf")],
)
def test_a_bad_environment_value_falls_back_alone(name, value, caplog):
    with caplog.at_level(logging.WARNING, logger="trunk_trace"):
        config = Config.from_env({**OTHERS, name: value})
    assert config.api_address == "https://api.trunk.io" and config.spool_max_mb == 100.0
    assert config.file == "/tmp/events.jsonl" and config.spool_dir == "/tmp/spool"
    assert config.token == "secret-token" and config.summary is False and config.exit_timeout == 0.5
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and name in warnings[0], warnings


def test_an_exit_timeout_past_a_day_falls_back(caplog):
    with caplog.at_level(logging.WARNING, logger="trunk_trace"):
        assert Config.from_env({"TRUNK_TRACE_EXIT_TIMEOUT": "1e12"}).exit_timeout == 2.0
    assert "TRUNK_TRACE_EXIT_TIMEOUT" in caplog.text


@pytest.mark.parametrize("address", ["http://127.0.0.1:abc", "http://127.0.0.1:99999"])
def test_a_bad_address_costs_nothing_at_exit(tmp_path, address):
    import sys
    import subprocess

    from helpers import clean_env, events_in

    events_file = tmp_path / "events.jsonl"
    env = clean_env(TRUNK_PUBLIC_API_ADDRESS=address, TRUNK_API_TOKEN="secret-token", TRUNK_TRACE_FILE=str(events_file),
                    TRUNK_TRACE_SPOOL_DIR=str(tmp_path / "spool"), TRUNK_TRACE_EXIT_TIMEOUT="0.2", TRUNK_TRACE_SUMMARY="0")
    code = "from trunk_trace import track\nwith track('build'):\n    pass\n"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert "failed at exit" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert "TRUNK_PUBLIC_API_ADDRESS" in done.stderr
    assert [e["sequence"]["name"] for e in events_in(events_file)] == ["build"]


@pytest.mark.parametrize("timeout", ["1", float("nan"), -5, 1e12, True])
@pytest.mark.parametrize("call", ["flush", "shutdown"])
def test_flush_and_shutdown_check_their_timeout_at_the_call(tmp_path, call, timeout):
    events_file = tmp_path / "events.jsonl"
    trunk_trace.configure(file=str(events_file), summary=False)
    with track("kept"):
        pass
    with pytest.raises(ValueError, match=f"{call}\\(\\) argument 'timeout'"):
        getattr(trunk_trace, call)(timeout)
    trunk_trace.shutdown(5)  # the refused call cost nothing
    from helpers import events_in

    assert [e["sequence"]["name"] for e in events_in(events_file)] == ["kept"]


@pytest.mark.parametrize(
    "settings, error, setting",
    [({"api_address": 123}, TypeError, "api_address"), ({"api_address": "https://[::1"}, ValueError, "api_address"),
     ({"api_address": "http://127.0.0.1:abc"}, ValueError, "api_address"),
     ({"exporters": 5}, TypeError, "exporters"), ({"otlp_headers": 5}, TypeError, "otlp_headers"),
     ({"otlp_resource": "abc"}, TypeError, "otlp_resource"), ({"otlp_resource": {1: object()}}, TypeError, "otlp_resource"),
     ({"otlp_resource": {"service.name": 5}}, TypeError, "otlp_resource"), ({"exit_timeout": 1e12}, ValueError, "exit_timeout")],
)
def test_configure_errors_name_the_setting(settings, error, setting):
    with pytest.raises(error, match=setting):
        trunk_trace.configure(**settings)


@pytest.mark.parametrize("token", [b"secret-token-41", ["secret-token-41"], ("secret-token-41",)])
def test_a_token_of_the_wrong_type_is_not_shown_in_the_error(token):
    with pytest.raises(TypeError, match="token") as raised:
        trunk_trace.configure(token=token)
    assert "secret-token-41" not in str(raised.value) and "secret-token-41" not in repr(raised.value)
