"""Configuration: the one frozen value every part of the library reads.

``Config.from_env()`` reads the environment; ``configure(**settings)`` starts
from it and overrides. Bad values in the environment are reported once and
replaced by defaults (a typo in CI settings must not fail the build); bad
values passed to ``configure()`` raise, naming the setting.
"""

from __future__ import annotations

import atexit
import ipaddress
import math
import numbers
import os
import sys
import urllib.parse
from typing import Any, Iterable, Mapping, Optional, Sequence

import attrs

from . import _state
from ._report import dropped, forget, report_once
from ._state import STATE, env_flag

DEFAULT_API_ADDRESS = "https://api.trunk.io"
DEFAULT_EXIT_TIMEOUT = 2.0
DEFAULT_SPOOL_MAX_MB = 100.0

# Every environment variable the core reads: name -> (setting, parser).
ENVIRONMENT = {
    "TRUNK_TRACE_DISABLED": "enabled",
    "TRUNK_API_TOKEN": "token",
    "TRUNK_PUBLIC_API_ADDRESS": "api_address",
    "TRUNK_REPO_URL": "repo_url",
    "TRUNK_TRACE_PLATFORM": "platform",
    "TRUNK_TRACE_SUMMARY": "summary",
    "TRUNK_TRACE_FILE": "file",
    "TRUNK_TRACE_EXIT_TIMEOUT": "exit_timeout",
    "TRUNK_TRACE_SPOOL_DIR": "spool_dir",
    "TRUNK_TRACE_SIGTERM": "handle_sigterm",
    "TRUNK_TRACE_SPOOL_MAX_MB": "spool_max_mb",
    "TRUNK_TRACE_CHROME": "chrome",
    # OpenTelemetry's own variables, as its specification defines them. A signal-specific
    # variable comes after the generic one, so it wins.
    "OTEL_SDK_DISABLED": "otlp_enabled",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "otlp_endpoint",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "otlp_endpoint",
    "OTEL_EXPORTER_OTLP_HEADERS": "otlp_headers",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "otlp_headers",
    "OTEL_EXPORTER_OTLP_TIMEOUT": "otlp_timeout",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "otlp_timeout",
    "OTEL_EXPORTER_OTLP_COMPRESSION": "otlp_compression",
    "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "otlp_compression",
    "OTEL_RESOURCE_ATTRIBUTES": "otlp_resource",
    "OTEL_SERVICE_NAME": "otlp_resource",
}
_OTLP_PROTOCOL_VARIABLES = ("OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")


def _check_api_address(instance: Any, attribute: Any, value: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"api_address must be an http(s) origin like {DEFAULT_API_ADDRESS!r}, got {type(value).__name__}")
    try:
        parsed = urllib.parse.urlsplit(value)
        parsed.port  # noqa: B018  # raises for a port that is not a number from 0 to 65535
    except ValueError as exc:  # "Invalid IPv6 URL", "Port out of range 0-65535", ...
        raise ValueError(f"api_address is not a valid URL ({exc})") from None  # not the value: it may hold credentials
    if parsed.username or parsed.password:
        raise ValueError("api_address must not carry credentials; the token goes in TRUNK_API_TOKEN")
    if parsed.scheme not in ("https", "http") or not parsed.hostname:
        raise ValueError(f"api_address must be an http(s) origin like {DEFAULT_API_ADDRESS!r}, got {value!r}")
    if parsed.scheme == "http" and not _is_loopback(parsed.hostname):
        raise ValueError(
            f"api_address {value!r}: plain http is allowed only for loopback hosts (127.0.0.1, ::1, localhost); use https"
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


MAX_TIMEOUT = 86_400.0  # a day: longer is a typo (and past threading.TIMEOUT_MAX, waits fail)


def check_timeout(value: object, what: str) -> float:
    """A number of seconds from 0 to MAX_TIMEOUT, as a float; raises naming *what*."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{what} must be a number of seconds (int or float), got {type(value).__name__}")
    seconds = float(value)
    if not 0 <= seconds <= MAX_TIMEOUT:  # nan compares false
        raise ValueError(f"{what} must be a number of seconds from 0 to {MAX_TIMEOUT:g}, got {value!r}")
    return seconds


def _check_timeout(instance: Any, attribute: Any, value: float) -> None:
    if not isinstance(value, (int, float)):  # a setting is kept as given: only types that stay numbers in arithmetic
        raise ValueError(f"{attribute.name} must be a number of seconds (int or float), got {type(value).__name__}")
    check_timeout(value, attribute.name)


def _check_megabytes(instance: Any, attribute: Any, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{attribute.name} must be a finite number of megabytes > 0, got {value!r}")


def _check_optional_text(instance: Any, attribute: Any, value: Optional[str]) -> None:
    # Never the value itself: it may be the token (given as bytes, say).
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{attribute.name} must be a non-empty str or None, got {type(value).__name__}")
    if value is not None and not value.strip():
        raise ValueError(f"{attribute.name} must be a non-empty str or None, got a blank str")


def _check_optional_bool(instance: Any, attribute: Any, value: Optional[bool]) -> None:
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"{attribute.name} must be True, False or None, got {value!r}")


def _check_bool(instance: Any, attribute: Any, value: bool) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{attribute.name} must be True or False, got {value!r}")


def _check_otlp_endpoint(instance: Any, attribute: Any, value: Optional[str]) -> None:
    if value is None:
        return
    parsed = urllib.parse.urlsplit(value) if isinstance(value, str) else None
    if parsed is None or parsed.scheme not in ("https", "http") or not parsed.hostname:
        raise ValueError(f"otlp_endpoint must be an http(s) URL like 'http://localhost:4318/v1/traces', got {value!r}")
    if parsed.username or parsed.password:
        raise ValueError("otlp_endpoint must not carry credentials; put them in otlp_headers (OTEL_EXPORTER_OTLP_HEADERS)")


def _check_otlp_headers(instance: Any, attribute: Any, value: Mapping[str, str]) -> None:
    if not value:
        return  # the usual case: no need to load the OTLP exporter (and the HTTP machinery) to check
    from .exporters.otlp import valid_header

    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str) or not valid_header(key, item):
            # The value may be a secret: name the key only.
            raise ValueError(f"otlp_headers: header {key!r} is not a valid HTTP header name and value")


def _check_otlp_compression(instance: Any, attribute: Any, value: Optional[str]) -> None:
    if value not in (None, "gzip"):
        raise ValueError(f"otlp_compression must be 'gzip' or None, got {value!r}")


def _check_otlp_resource(instance: Any, attribute: Any, value: Mapping[str, str]) -> None:
    for key, item in value.items():
        if not isinstance(key, str) or not key or not isinstance(item, str):
            raise TypeError(f"otlp_resource: each attribute must be a non-empty str key with a str value, got {key!r}: {type(item).__name__}")


def _mapping(value: Any, setting: str) -> dict:
    """A mapping setting as a plain dict, or TypeError naming *setting*."""
    if not isinstance(value, Mapping):
        raise TypeError(f"{setting} must be a mapping of str to str, got {type(value).__name__}")
    return dict(value)


def _headers_dict(value: Any) -> dict:
    return _mapping(value, "otlp_headers")


def _resource_dict(value: Any) -> dict:
    return _mapping(value, "otlp_resource")


def _exporter_tuple(value: Any) -> tuple:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"exporters must be a list of exporters, got {type(value).__name__}")
    return tuple(value)


def _check_exporters(instance: Any, attribute: Any, value: Sequence[Any]) -> None:
    for exporter in value:
        missing = [m for m in ("export", "force_flush", "shutdown") if not callable(getattr(exporter, m, None))]
        if missing:
            raise TypeError(f"exporters: {exporter!r} lacks {', '.join(missing)} (see trunk_trace.exporters)")


# Numeric settings read from the environment: their validator and what a value looks like.
_NUMBER_SETTINGS = {
    "exit_timeout": (_check_timeout, "seconds, e.g. 2 or 0.5"),
    "spool_max_mb": (_check_megabytes, "megabytes, e.g. 100"),
}


@attrs.frozen(kw_only=True)
class Config:
    """Settings of trunk_trace. Change with ``attrs.evolve`` or ``configure(**changes)``."""

    enabled: bool = attrs.field(default=True, validator=_check_bool)
    #: The Trunk API token; when set, events are sent. Never shown in a repr.
    token: Optional[str] = attrs.field(default=None, repr=False, validator=_check_optional_text)
    api_address: str = attrs.field(default=DEFAULT_API_ADDRESS, validator=_check_api_address)
    repo_url: Optional[str] = attrs.field(default=None, validator=_check_optional_text)
    platform: Optional[str] = attrs.field(default=None, validator=_check_optional_text)
    #: The timing summary on stderr at exit; None: on when no token is set.
    summary: Optional[bool] = attrs.field(default=None, validator=_check_optional_bool)
    #: A JSON Lines file every finished event is appended to.
    file: Optional[str] = attrs.field(default=None, validator=_check_optional_text)
    exit_timeout: float = attrs.field(default=DEFAULT_EXIT_TIMEOUT, validator=_check_timeout)
    spool_dir: Optional[str] = attrs.field(default=None, validator=_check_optional_text)
    handle_sigterm: bool = attrs.field(default=True, validator=_check_bool)
    #: Cap of the spool of undelivered events, in MB; past it the oldest go (counted, reported).
    spool_max_mb: float = attrs.field(default=DEFAULT_SPOOL_MAX_MB, validator=_check_megabytes)
    #: Write a trace file for Perfetto / chrome://tracing here (child processes add to it).
    chrome: Optional[str] = attrs.field(default=None, validator=_check_optional_text)
    #: OTLP/HTTP traces URL, used as is (OTEL_EXPORTER_OTLP_ENDPOINT gets /v1/traces appended).
    otlp_endpoint: Optional[str] = attrs.field(default=None, validator=_check_otlp_endpoint)
    #: Headers of every OTLP request (often an API key): never shown, logged or spooled.
    otlp_headers: Mapping[str, str] = attrs.field(
        factory=dict, converter=_headers_dict, repr=False, hash=False, validator=_check_otlp_headers
    )
    #: Seconds one OTLP request may take (the variables say milliseconds, as the specification does).
    otlp_timeout: float = attrs.field(default=10.0, validator=_check_timeout)
    otlp_compression: Optional[str] = attrs.field(default=None, validator=_check_otlp_compression)
    #: Extra resource attributes (OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME as service.name).
    otlp_resource: Mapping[str, str] = attrs.field(
        factory=dict, converter=_resource_dict, hash=False, validator=_check_otlp_resource
    )
    #: False (OTEL_SDK_DISABLED=true) turns the OTLP exporter off.
    otlp_enabled: bool = attrs.field(default=True, validator=_check_bool)
    #: Extra exporters (objects with export/force_flush/shutdown).
    exporters: Sequence[Any] = attrs.field(default=(), converter=_exporter_tuple, validator=_check_exporters)

    @property
    def summary_enabled(self) -> bool:
        return self.summary if self.summary is not None else not self.token

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """The configuration the environment asks for (bad values: reported once, defaults used)."""
        env = os.environ if environ is None else environ
        settings: dict[str, Any] = {}
        for name, setting in ENVIRONMENT.items():
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                continue
            value: Any = raw.strip()
            if name.startswith("OTEL_"):
                value = _otel_value(name, value, settings.get(setting))
                if value is None:
                    continue
            elif setting in ("enabled", "summary", "handle_sigterm"):
                value = env_flag(raw)
                if value is None:
                    report_once(f"env:{name}", "ignoring %s=%r: expected 1/0, true/false, yes/no or on/off", name, raw)
                    continue
                if setting == "enabled":
                    value = not value  # the variable says "disabled"
            elif setting in _NUMBER_SETTINGS:
                check, expected = _NUMBER_SETTINGS[setting]
                try:
                    value = float(raw)
                    check(None, getattr(attrs.fields(cls), setting), value)
                except ValueError:
                    report_once(f"env:{name}", "ignoring %s=%r: expected %s", name, raw, expected)
                    continue
            # Checked one by one, so a bad value costs only itself (its default, one warning).
            field = getattr(attrs.fields(cls), setting)
            try:
                if field.converter is not None:
                    value = field.converter(value)
                if field.validator is not None:
                    field.validator(None, field, value)
            except (TypeError, ValueError) as exc:
                report_once(f"env:{name}", "ignoring %s (%s); using its default", name, exc)
                continue
            settings[setting] = value
        for name in _OTLP_PROTOCOL_VARIABLES:
            protocol = env.get(name, "").strip()
            if protocol and protocol != "http/json" and settings.get("otlp_endpoint"):
                report_once(f"env:{name}", "%s=%s: trunk_trace sends OTLP/HTTP with JSON (http/json) only", name, protocol)
        try:
            return cls(**settings)
        except (TypeError, ValueError) as exc:  # not expected (each value was checked above): still never raise
            report_once("env:config", "ignoring the environment's trunk_trace settings: %s", exc)
            return cls()


def _otel_value(name: str, raw: str, before: Any) -> Any:
    """An OpenTelemetry variable's value as the setting wants it; None (reported once) when unreadable."""
    if name == "OTEL_SDK_DISABLED":
        return raw.lower() != "true"  # the specification: only "true" (any case) disables
    if name.endswith("_ENDPOINT"):
        from .exporters.otlp import traces_url

        value = raw if name == "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" else traces_url(raw)
        try:
            _check_otlp_endpoint(None, None, value)
        except ValueError as exc:
            report_once(f"env:{name}", "ignoring %s: %s", name, exc)
            return None
        return value
    if name.endswith("_TIMEOUT"):
        try:
            seconds = float(raw) / 1000.0  # milliseconds, per the specification
            if not math.isfinite(seconds) or seconds <= 0:
                raise ValueError
        except ValueError:
            report_once(f"env:{name}", "ignoring %s=%r: expected milliseconds, e.g. 10000", name, raw)
            return None
        return seconds
    if name.endswith("_COMPRESSION"):
        if raw.lower() in ("gzip", "none"):
            return "gzip" if raw.lower() == "gzip" else None
        report_once(f"env:{name}", "ignoring %s=%r: expected gzip or none", name, raw)
        return None
    if name == "OTEL_SERVICE_NAME":
        return {**(before or {}), "service.name": raw}
    from .exporters.otlp import parse_key_values, valid_header

    pairs, bad = parse_key_values(raw)
    if name.endswith("_HEADERS"):
        bad += [key for key, value in pairs.items() if not valid_header(key, value)]
        pairs = {key: value for key, value in pairs.items() if valid_header(key, value)}
    if bad:  # keys and positions only: header values may be secrets
        report_once(f"env:{name}", "ignoring malformed entries of %s: %s", name, ", ".join(bad))
    if name == "OTEL_RESOURCE_ATTRIBUTES":
        return {**pairs, **(before or {})}  # OTEL_SERVICE_NAME, read later, wins anyway
    return pairs


def get_config() -> Config:
    """The configuration in force: the one given to ``configure()``, else the environment's."""
    with STATE.lock:
        if STATE.config is None:
            STATE.config = Config.from_env()
        return STATE.config


def configure(**settings: Any) -> Config:
    """Configure trunk_trace: the environment's settings, with *settings* overriding them.

    Settings are the fields of :class:`Config` (``token``, ``api_address``,
    ``file``, ``summary``, ``exit_timeout``, ...). Events finished before the
    call are flushed to the outputs configured before it. Returns the new
    configuration.
    """
    unknown = sorted(set(settings) - {f.name for f in attrs.fields(Config)})
    if unknown:
        raise TypeError(f"configure() got unknown settings: {', '.join(unknown)}")
    config = attrs.evolve(Config.from_env(), **settings)
    with STATE.lock:
        previous = _detach_processor()
        STATE.config = config
        STATE.event_context = None
        STATE.enabled = config.enabled
        if config.enabled:
            _state.join_inherited_chain()
        if STATE.on_end is not _state.start_processor:
            STATE.on_end = _state.start_processor
        _state.register_exit()
        if config.enabled:
            _state.install_sigterm_handler()
    if previous is not None:
        previous.shutdown(config.exit_timeout)
    return config


def reset() -> None:
    """Back to the state of a fresh import (for tests): no configuration, no exporters, no atexit hook."""
    with STATE.lock:
        processor, STATE.processor = STATE.processor, None
        if processor is not None:
            processor.abandon()
        STATE.config = None
        STATE.event_context = None
        STATE.enabled = None
        STATE.on_end = _state.start_processor
        STATE.inherited_parent = None
        if STATE.exit_registered:
            atexit.unregister(_state._at_exit)
            STATE.exit_registered = False
    signals = sys.modules.get("trunk_trace._signals")
    if signals is not None:
        signals.uninstall()
    forget()


def flush(timeout: float | None = None) -> bool:
    """Export every finished event now; wait at most *timeout* seconds. True when all went out."""
    if timeout is not None:
        timeout = check_timeout(timeout, "flush() argument 'timeout'")
    processor = STATE.processor
    if processor is None:
        return True
    return processor.flush(timeout)


def shutdown(timeout: float | None = None) -> None:
    """Flush and close every output (prints the summary), within *timeout* seconds.

    Idempotent. Blocks finished afterwards start the outputs afresh.
    """
    if timeout is not None:
        timeout = check_timeout(timeout, "shutdown() argument 'timeout'")
    with STATE.lock:
        processor = _detach_processor()
        if STATE.exit_registered:
            atexit.unregister(_state._at_exit)
            STATE.exit_registered = False
    # Outside the lock: the exporter thread may need it to finish its batch.
    if processor is not None:
        processor.shutdown(timeout)


def _detach_processor() -> Any:
    """Take the processor out of service (events finished from now on start a new one)."""
    processor, STATE.processor = STATE.processor, None
    if processor is not None and processor.feeds(STATE.on_end):
        STATE.on_end = _state.start_processor
    return processor


def shutdown_at_exit() -> None:
    try:
        shutdown(get_config().exit_timeout)
        lost = dropped()
        if lost:
            report_once("dropped", "%d event(s) could not be recorded or kept; see the messages above", lost)
    except Exception:
        report_once("exit", "failed at exit; the build's result is unaffected", exc_info=True)


def event_context(config: Config | None = None) -> tuple[str, tuple[tuple[str, Any], ...], Optional[dict]]:
    """The platform, the tags every event carries, and the repo (wire dict or None).

    Detected once per process (CI variables, then git): off the hot path, in
    the exporter thread or in ``capture()``.
    """
    with STATE.lock:
        context = STATE.event_context
        if context is None:
            context = STATE.event_context = _detect_context(config or get_config())
        return context


def _detect_context(config: Config) -> tuple[str, tuple[tuple[str, Any], ...], Optional[dict]]:
    from ._ci import detect, parse_remote
    from ._event import encodable

    detected = detect(os.environ)
    repo = detected.repo
    if config.repo_url is not None:
        repo = parse_remote(config.repo_url)
        if repo is None:
            report_once("repo_url", "cannot read the repository from repo_url %r; expected a git remote URL or host/owner/name", config.repo_url)
            repo = detected.repo
    # Every event carries these: made encodable here, once (CI variables may hold bytes that are not UTF-8).
    platform = encodable(config.platform or detected.platform)
    tags = tuple((encodable(key), encodable(value) if isinstance(value, str) else value) for key, value in detected.tags())
    wire = None if repo is None else {k: encodable(v) if isinstance(v, str) else v for k, v in repo.to_wire().items()}
    return platform, tags, wire


def build_resources(config: Config | None = None) -> Any:
    """Everything a processor needs, resolved once (in the exporter thread)."""
    from ._batch import Resources

    config = config or get_config()
    platform, common_tags, repo = event_context(config)
    exporters: list[Any] = []
    # Each exporter's module is imported only when it is configured: this runs once per
    # process, in the exporter thread, and every import there competes for the GIL.
    if config.summary_enabled:
        from .exporters.console import ConsoleSummary

        exporters.append(ConsoleSummary(sent=bool(config.token)))
    if config.file:
        from .exporters.jsonl import JsonLinesExporter

        exporters.append(JsonLinesExporter(config.file, repo))
    if config.token:
        from ._ci import Repo, warn_if_unsupported_host
        from .exporters.http import TrunkHttpExporter

        if repo is not None:
            warn_if_unsupported_host(Repo(**repo))
        exporters.append(TrunkHttpExporter.from_config(config, repo))
    if config.otlp_endpoint and config.otlp_enabled:
        from .exporters.otlp import OtlpHttpExporter

        exporters.append(OtlpHttpExporter.from_config(config, repo, common_tags))
    if config.chrome:
        from .exporters.chrome import ChromeTraceExporter

        exporters.append(ChromeTraceExporter(config.chrome))
    exporters.extend(config.exporters)
    return Resources(platform, common_tags, exporters)
