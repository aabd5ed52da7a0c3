"""OpenTelemetry: finished events as spans, sent over OTLP/HTTP with JSON encoding.

No OpenTelemetry package is needed: the request is written here, exactly as
the OTLP specification's JSON encoding wants it (which differs from
protobuf's generic JSON mapping): trace and span ids as lowercase hex, enums
as integers, lowerCamelCase field names, 64-bit integers as decimal strings.

Delivery is the Trunk exporter's machinery (:class:`~.http.HttpExporter`):
sender threads off the hot path, retries of 429, 502, 503, 504 and connection
errors honouring ``Retry-After``, the exit budget, a spool of its own
(``<spool dir>/otlp``) replayed in the background and by ``trunk-trace flush``.
Header values (they often hold an API key) are never logged or spooled.

One event, one span:

* trace id: the inherited W3C ``TRACEPARENT``'s when there is one, else
  ``_propagate.trace_id(chainId)``; span id: ``_propagate.span_id(id)``; parent
  span id: ``span_id(parent.eventId)``, or for a root the inherited
  ``TRACEPARENT``'s span, so a build started by an instrumented tool nests in
  its trace. Trunk's own ids are unchanged.
* attributes: every tag and metric under its own key (a metric wins over a tag
  of the same key), plus ``trunk.sequence.kind``, ``trunk.sequence.key``,
  ``trunk.platform`` and ``trunk.conclusion``.
* status: ERROR for ``FAILURE`` and ``TIMED_OUT`` (message: ``error.message``
  when the block raised, else the conclusion); UNSET for ``SUCCESS``,
  ``SKIPPED`` and ``CANCELLED`` (a cancelled job did not fail, and OpenTelemetry
  leaves OK to the application).
* resource, one per chain: ``service.name`` (``OTEL_SERVICE_NAME``, else the
  repository's name, else the pipeline's name), ``cicd.pipeline.name`` (the
  root block's name), ``cicd.pipeline.run.id`` (the CI's run id, else the chain
  id), ``cicd.pipeline.run.url.full``, ``vcs.repository.url.full``,
  ``vcs.repository.name``, ``vcs.ref.head.name``, ``vcs.ref.head.revision``,
  ``vcs.change.id`` when known, and ``OTEL_RESOURCE_ATTRIBUTES``.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any, Mapping, Optional, Sequence

from .._event import FinishedEvent
from .._retry import RetryPolicy, Verdict, classify_status, otlp_retryable
from .._version import __version__
from .http import MAX_QUEUED_EVENTS, SENDERS, Batch, HttpClient, HttpExporter, make_batches
from .spool import Spool

TRACES_PATH = "/v1/traces"
DEFAULT_TIMEOUT = 10.0  # seconds: the specification's default for OTEL_EXPORTER_OTLP_TIMEOUT
SPAN_KIND_INTERNAL = 1
STATUS_UNSET, STATUS_ERROR = 0, 2
ERROR_CONCLUSIONS = frozenset({"FAILURE", "TIMED_OUT"})

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_SCOPE = _ENCODER.encode({"name": "trunk_trace", "version": __version__})

_REASONS = {
    "unreachable": "cannot reach the OTLP endpoint {url} ({detail}); spans are kept in {spool} and sent later (or run `trunk-trace flush`)",
    "server": "the OTLP endpoint {url} keeps failing ({detail}); spans are kept in {spool} and sent later (or run `trunk-trace flush`)",
    "deadline": "OTLP delivery ran out of time ({detail}); unsent spans are kept in {spool} (`trunk-trace flush` sends them)",
    "unauthorized": "the OTLP endpoint {url} refused the request ({detail}): check OTEL_EXPORTER_OTLP_HEADERS, then run `trunk-trace flush`; spans are kept in {spool}",
    "misdirected": "{url} answered {detail}, which is not an OTLP/HTTP traces endpoint (redirects are not followed): "
    "check OTEL_EXPORTER_OTLP_ENDPOINT (/v1/traces is appended to it) or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (used as is); spans are kept in {spool}",
    "full": "OTLP delivery fell behind; some spans are kept in {spool} and sent later",
    "bug": "OTLP delivery failed unexpectedly ({detail}); spans are kept in {spool}",
}


def classify_otlp_status(status: int) -> Verdict:
    """What an answer means, per the OTLP/HTTP specification: only 429, 502, 503 and 504 are retried."""
    return classify_status(status, otlp_retryable)


# --- the environment's forms (parsed by _config) ---


def traces_url(base: str) -> str:
    """``OTEL_EXPORTER_OTLP_ENDPOINT`` is a base URL: the traces path is appended to it."""
    return base.rstrip("/") + TRACES_PATH


def parse_key_values(text: str) -> tuple[dict[str, str], list[str]]:
    """``k=v,k2=v2`` with percent-encoded values (OTLP headers, resource attributes).

    Returns the pairs and the keys (or positions) of the malformed entries; a
    value never appears in what is returned for reporting.
    """
    pairs: dict[str, str] = {}
    bad: list[str] = []
    for number, entry in enumerate(text.split(","), 1):
        if not entry.strip():
            continue
        key, sep, value = entry.partition("=")
        key = key.strip()
        if not sep or not key:
            bad.append(f"entry {number}")
            continue
        pairs[urllib.parse.unquote(key)] = urllib.parse.unquote(value.strip())
    return pairs, bad


def valid_header(key: str, value: str) -> bool:
    token = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return bool(key) and all(c in token for c in key) and value.isascii() and value.isprintable()


# --- events as spans ---


def _value(value: Any) -> dict:
    if value.__class__ is str:
        return {"stringValue": value}
    if value.__class__ is bool:
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}  # int64 is a string in JSON
    if isinstance(value, float):
        return {"doubleValue": value}
    return {"stringValue": str(value)}


def attributes(items: Mapping[str, Any]) -> list[dict]:
    return [{"key": key, "value": _value(value)} for key, value in items.items()]


def span(record: FinishedEvent, inherited: Optional[tuple[str, str]] = None) -> dict:
    """One finished event as an OTLP span (JSON-ready); *inherited* is ``TRACEPARENT``'s (trace, span)."""
    from .._propagate import span_id, trace_id

    event = record.event
    sequence = event["sequence"]
    own = span_id(event["id"])
    result: dict[str, Any] = {
        "traceId": inherited[0] if inherited else trace_id(event["chainId"]),
        "spanId": own,
    }
    parent = event.get("parent")
    if parent is not None:
        result["parentSpanId"] = span_id(parent["eventId"])
    elif inherited and inherited[1] != own:  # `trunk-trace end`: the job is the inherited span itself
        result["parentSpanId"] = inherited[1]
    conclusion = event["conclusion"]
    values: dict[str, Any] = {tag["k"]: tag["v"] for tag in event["payload"]["tags"]}
    values.update((metric["k"], metric["v"]) for metric in event["payload"]["metrics"])
    values["trunk.sequence.kind"] = sequence["kind"]
    values["trunk.sequence.key"] = sequence["key"]
    values["trunk.platform"] = sequence["platform"]
    values["trunk.conclusion"] = conclusion
    result.update(
        name=sequence["name"],
        kind=SPAN_KIND_INTERNAL,
        startTimeUnixNano=str(record.start_ns),
        endTimeUnixNano=str(record.end_ns),
        attributes=attributes(values),
    )
    if conclusion in ERROR_CONCLUSIONS:
        message = values.get("error.message")
        result["status"] = {"code": STATUS_ERROR, "message": message if isinstance(message, str) else conclusion}
    else:
        result["status"] = {"code": STATUS_UNSET}
    return result


def resource(
    pipeline: str, chain_id: str, repo: Optional[dict], tags: Mapping[str, Any], extra: Mapping[str, str] = {}
) -> dict:
    """The resource of one chain's spans: OpenTelemetry's CI/CD and VCS semantic conventions."""
    values: dict[str, Any] = {}
    if repo is not None:
        values["service.name"] = repo["name"]
    values["cicd.pipeline.name"] = pipeline
    values["cicd.pipeline.run.id"] = str(tags.get("ci.run_id") or chain_id)
    for key, tag in (("cicd.pipeline.run.url.full", "ci.url"), ("vcs.ref.head.name", "branch"),
                     ("vcs.ref.head.revision", "sha"), ("vcs.change.id", "pr")):
        if tags.get(tag) is not None:
            values[key] = str(tags[tag])
    if repo is not None:
        values["vcs.repository.url.full"] = f"https://{repo['host']}/{repo['owner']}/{repo['name']}"
        values["vcs.repository.name"] = repo["name"]
    values.update(extra)  # OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME win
    values.setdefault("service.name", pipeline)
    return {"attributes": attributes(dict(sorted(values.items())))}


class OtlpBatch(Batch):
    """Spans of one resource: ``repo_json`` holds the encoded resource."""

    __slots__ = ()

    def body(self) -> bytes:
        spans = ",".join(event for _, _, event in self.items)
        return (
            f'{{"resourceSpans":[{{"resource":{self.repo_json},'
            f'"scopeSpans":[{{"scope":{_SCOPE},"spans":[{spans}]}}]}}]}}'
        ).encode("utf-8")

    @staticmethod
    def line(resource_json: str, pid: int, thread: int, span_json: str) -> str:
        return f'{{"resource":{resource_json},"pid":{pid},"thread":{thread},"event":{span_json}}}\n'

    @staticmethod
    def group_of(item: dict) -> str:
        return _ENCODER.encode(item.get("resource"))


class OtlpClient(HttpClient):
    label = "the OTLP endpoint"


def make_client(
    url: str, headers: Mapping[str, str], *, gzip: bool = False, timeout: float = DEFAULT_TIMEOUT,
    connections: int = SENDERS,
) -> OtlpClient:
    # Short values (a "1" flag) would mask every digit of a message; real secrets are longer.
    secrets = [value for value in headers.values() if len(value) >= 4]
    return OtlpClient(
        url, dict(headers), connections=connections, classify=classify_otlp_status, secrets=secrets,
        gzip=gzip, timeout=timeout,
    )


def otlp_spool(config: Any) -> Spool:
    """OTLP's spool: ``otlp/`` inside the spool directory, apart from the Trunk API's files."""
    return Spool.from_config(config, "otlp")


class OtlpHttpExporter(HttpExporter):
    """Sends finished events as spans to an OTLP/HTTP traces endpoint (JSON encoding)."""

    batch_type = OtlpBatch
    reasons = _REASONS
    report_key = "otlp"

    def __init__(
        self,
        url: str,
        spool: Spool,
        *,
        headers: Mapping[str, str] = {},
        gzip: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        repo: Optional[dict] = None,
        common_tags: Sequence[tuple[str, Any]] = (),
        resource_attributes: Mapping[str, str] = {},
        policy: RetryPolicy = RetryPolicy(),
        senders: int = SENDERS,
        max_queued_events: int = MAX_QUEUED_EVENTS,
        replay: bool = True,
    ) -> None:
        self._repo = repo
        self._tags = dict(common_tags)
        self._extra = dict(resource_attributes)
        self._resources: dict[tuple[str, str], str] = {}  # (pipeline, chain) -> encoded resource
        client = make_client(url, headers, gzip=gzip, timeout=timeout, connections=senders)
        super().__init__(client, spool, policy=policy, senders=senders, max_queued_events=max_queued_events, replay=replay)

    @classmethod
    def from_config(cls, config: Any, repo: Optional[dict], common_tags: Sequence[tuple[str, Any]] = ()) -> OtlpHttpExporter:
        return cls(
            config.otlp_endpoint, otlp_spool(config), headers=config.otlp_headers,
            gzip=config.otlp_compression == "gzip", timeout=config.otlp_timeout,
            repo=repo, common_tags=common_tags, resource_attributes=config.otlp_resource,
        )

    def _resource_json(self, record: FinishedEvent) -> str:
        pipeline, chain = record.root_name, record.event["chainId"]
        encoded = self._resources.get((pipeline, chain))
        if encoded is None:
            encoded = _ENCODER.encode(resource(pipeline, chain, self._repo, self._tags, self._extra))
            self._resources[(pipeline, chain)] = encoded
        return encoded

    def _encode(self, records: Sequence[FinishedEvent]) -> list[Batch]:
        from .. import _propagate

        inherited = _propagate._INHERITED_TRACE
        groups: dict[str, list[tuple[int, int, str]]] = {}
        for record in records:
            encoded = _ENCODER.encode(span(record, inherited))
            groups.setdefault(self._resource_json(record), []).append((record.pid, record.thread_id, encoded))
        return [batch for group, items in groups.items() for batch in make_batches(group, items, OtlpBatch)]


__all__ = ["OtlpBatch", "OtlpHttpExporter", "classify_otlp_status", "otlp_spool", "resource", "span", "traces_url"]
