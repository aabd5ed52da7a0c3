"""OTLP/HTTP JSON export: the wire checked against the official protobuf definitions, ids and
parentage, inherited TRACEPARENT, the environment's variables, and delivery under faults."""

from __future__ import annotations

import base64
import gzip
import json
import os
import textwrap
import time

import pytest
from sink import Reply, Sink, closed_port, run_python

import trunk_trace
from trunk_trace import track
from trunk_trace._config import Config, build_resources
from trunk_trace._retry import RetryPolicy
from trunk_trace.exporters.otlp import OtlpHttpExporter
from trunk_trace.exporters.spool import Spool
from trunk_trace.testing import InMemoryExporter

trace_service_pb2 = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")
json_format = pytest.importorskip("google.protobuf.json_format")

SECRET = "otlp-secret-key-7d1e"
REPO_URL = "https://github.com/acme/widgets.git"


@pytest.fixture
def sink():
    with Sink() as server:
        yield server


def parse(body: bytes | str | dict):
    """The request as the official protobuf message.

    OTLP/JSON writes ids as hex where protobuf's generic JSON mapping expects
    base64 (the collector special-cases them), so ids are converted first;
    everything else goes through the generic parser, which rejects unknown
    fields and wrong types.
    """
    data = json.loads(body) if isinstance(body, (bytes, str)) else json.loads(json.dumps(body))
    for resource_spans in data["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for field in ("traceId", "spanId", "parentSpanId"):
                    if field in span:
                        span[field] = base64.b64encode(bytes.fromhex(span[field])).decode()
    return json_format.Parse(json.dumps(data), trace_service_pb2.ExportTraceServiceRequest())


def spans_of(requests) -> list:
    return [span for request in requests for rs in parse(request.raw).resource_spans
            for ss in rs.scope_spans for span in ss.spans]


def attrs(items) -> dict:
    out = {}
    for kv in items:
        kind = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, kind)
    return out


def build() -> None:
    with track("build", tags={"suite": "unit"}):
        with track("compile") as ev:
            ev.metric("objects", 412)
            ev.tag("cached", True)
            with track("link"):
                pass
        try:
            with track("tests"):
                raise RuntimeError("3 failed")
        except RuntimeError:
            pass


def test_the_request_parses_with_the_official_definitions(sink):
    memory = InMemoryExporter()
    trunk_trace.configure(otlp_endpoint=f"{sink.url}/v1/traces", otlp_headers={"api-key": SECRET},
                          repo_url=REPO_URL, summary=False, exporters=[memory])
    build()
    trunk_trace.shutdown(10)

    assert sink.accepted, "no request reached the sink"
    request = sink.accepted[0]
    assert request.path == "/v1/traces"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["api-key"] == SECRET
    message = parse(request.raw)
    (resource_spans,) = message.resource_spans
    resource = attrs(resource_spans.resource.attributes)
    assert resource["service.name"] == "widgets"
    assert resource["cicd.pipeline.name"] == "build"
    assert resource["vcs.repository.url.full"] == "https://github.com/acme/widgets"
    root_event = next(e for e in memory.events if "parent" not in e)
    assert resource["cicd.pipeline.run.id"] == root_event["chainId"]  # no CI here: the chain is the run
    (scope_spans,) = resource_spans.scope_spans
    assert scope_spans.scope.name == "trunk_trace"

    spans = {span.name: span for span in scope_spans.spans}
    events = {event["sequence"]["name"]: event for event in memory.events}
    assert set(spans) == {"build", "compile", "link", "tests"}
    trace_ids = {span.trace_id for span in spans.values()}
    assert len(trace_ids) == 1 and len(next(iter(trace_ids))) == 16 and any(next(iter(trace_ids)))
    for name, span in spans.items():
        event = events[name]
        assert len(span.span_id) == 8 and any(span.span_id)
        assert span.kind == 1  # INTERNAL
        start, end = span.start_time_unix_nano, span.end_time_unix_nano
        assert event["createdAt"] * 1_000_000 <= start < (event["createdAt"] + 1) * 1_000_000
        assert start <= end and end // 1_000_000 == event["finishedAt"]
        values = attrs(span.attributes)
        assert values["trunk.sequence.kind"] == event["sequence"]["kind"]
        assert values["trunk.sequence.key"] == event["sequence"]["key"]
        assert values["trunk.platform"] == "local"
        assert values["trunk.conclusion"] == event["conclusion"]
        parent = event.get("parent")
        if parent is None:
            assert span.parent_span_id == b""
        else:  # parentage matches the event tree, and intervals nest
            parent_span = spans[next(n for n, e in events.items() if e["id"] == parent["eventId"])]
            assert span.parent_span_id == parent_span.span_id
            assert parent_span.start_time_unix_nano <= start and end <= parent_span.end_time_unix_nano
    assert len({span.span_id for span in spans.values()}) == 4
    compile_values = attrs(spans["compile"].attributes)
    assert compile_values["objects"] == 412 and compile_values["cached"] == "true"
    assert isinstance(compile_values["duration_ms"], float)
    assert attrs(spans["build"].attributes)["suite"] == "unit"
    assert spans["tests"].status.code == 2 and spans["tests"].status.message == "3 failed"
    assert spans["build"].status.code == 0


def test_ids_are_the_documented_mapping():
    from trunk_trace._propagate import span_id, trace_id

    memory = InMemoryExporter()
    trunk_trace.configure(summary=False, exporters=[memory])
    with track("root"):
        with track("child"):
            pass
    trunk_trace.flush(5)
    from trunk_trace.exporters.otlp import span as to_span

    for record in memory.records:
        first, again = to_span(record), to_span(record)
        assert first == again  # the same event always maps to the same span
        assert first["traceId"] == trace_id(record.event["chainId"])
        assert first["spanId"] == span_id(record.event["id"])
        assert all(c in "0123456789abcdef" for c in first["traceId"] + first["spanId"])


def test_an_inherited_traceparent_nests_the_build_in_the_callers_trace(sink, monkeypatch):
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    monkeypatch.setenv("TRACEPARENT", f"00-{caller_trace}-{caller_span}-01")
    memory = InMemoryExporter()
    trunk_trace.configure(otlp_endpoint=f"{sink.url}/v1/traces", summary=False, exporters=[memory])
    build()
    trunk_trace.shutdown(10)
    spans = {span.name: span for span in spans_of(sink.accepted)}
    assert {span.trace_id.hex() for span in spans.values()} == {caller_trace}
    assert spans["build"].parent_span_id.hex() == caller_span
    assert spans["compile"].parent_span_id == spans["build"].span_id
    root = next(e for e in memory.events if e["sequence"]["name"] == "build")
    assert root["chainId"] == root["id"] and "parent" not in root  # Trunk's chain is unchanged


CHILD_SCRIPT = """
import subprocess, sys
from trunk_trace import track
with track("pipeline"):
    with track("spawn"):
        subprocess.run([sys.executable, "-c", "from trunk_trace import track\\nwith track('child root'):\\n    pass"], check=True)
"""


def child_env(tmp_path, endpoint: str, **extra: str) -> dict:
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "SYSTEMROOT") if name in os.environ}
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env.update(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, TRUNK_TRACE_SPOOL_DIR=str(tmp_path / "spool"),
               TRUNK_TRACE_SUMMARY="0", TRUNK_REPO_URL=REPO_URL)
    env.update(extra)
    return env


def test_a_child_process_joins_the_trace_under_the_block_that_started_it(tmp_path, sink):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(CHILD_SCRIPT))
    done = run_python([str(script)], child_env(tmp_path, sink.url))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    spans = {span.name: span for span in spans_of(sink.accepted)}
    assert set(spans) == {"pipeline", "spawn", "child root"}
    assert len({span.trace_id for span in spans.values()}) == 1
    assert spans["child root"].parent_span_id == spans["spawn"].span_id
    assert spans["spawn"].parent_span_id == spans["pipeline"].span_id


def test_refused_then_spooled_without_secrets_then_flush_delivers(tmp_path, sink):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(CHILD_SCRIPT))
    headers = f"api-key={SECRET},x-tenant=acme%20corp"
    down = child_env(tmp_path, f"http://127.0.0.1:{closed_port()}", OTEL_EXPORTER_OTLP_HEADERS=headers)
    done = run_python([str(script)], down)
    assert done.returncode == 0
    assert done.seconds < 10
    assert "cannot reach the OTLP endpoint" in done.stderr and SECRET not in done.stderr
    pending = tmp_path / "spool" / "otlp" / "pending"
    spooled = [json.loads(line) for path in sorted(pending.iterdir()) for line in path.read_text().splitlines()]
    assert sorted(item["event"]["name"] for item in spooled) == ["child root", "pipeline", "spawn"]
    for path in (tmp_path / "spool").rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text()
    assert not (tmp_path / "spool" / "pending").exists() or not list((tmp_path / "spool" / "pending").iterdir())

    up = child_env(tmp_path, sink.url, OTEL_EXPORTER_OTLP_HEADERS=headers)
    flushed = run_python(["-m", "trunk_trace.cli", "flush"], up)
    assert flushed.returncode == 0, flushed.stdout + flushed.stderr
    assert "sent 3 span(s)" in flushed.stdout
    assert {request.headers["api-key"] for request in sink.accepted} == {SECRET}
    assert {request.headers["x-tenant"] for request in sink.accepted} == {"acme corp"}
    spans = spans_of(sink.accepted)
    assert sorted(span.name for span in spans) == ["child root", "pipeline", "spawn"]
    assert {span.span_id.hex() for span in spans} == {item["event"]["spanId"] for item in spooled}
    assert not list(pending.iterdir())


def records(count: int = 3) -> list:
    memory = InMemoryExporter()
    trunk_trace.configure(summary=False, exporters=[memory])
    with track("root"):
        for _ in range(count - 1):
            with track("step"):
                pass
    trunk_trace.flush(5)
    return memory.records


def exporter(url: str, tmp_path, **options) -> OtlpHttpExporter:
    options.setdefault("policy", RetryPolicy(initial=0.01, max_attempts=4))
    return OtlpHttpExporter(f"{url}/v1/traces", Spool(str(tmp_path / "spool")), **options)


def test_503_then_success(sink, tmp_path):
    sink.push(Reply(503), Reply(503))
    ex = exporter(sink.url, tmp_path)
    ex.export(records())
    assert ex.force_flush(10)
    ex.shutdown(1)
    assert [r.path for r in sink.attempts] == ["/v1/traces"] * 3
    assert len(spans_of(sink.accepted)) == 3


def test_429_waits_as_retry_after_says(sink, tmp_path):
    sink.push(Reply(429, headers=(("Retry-After", "1"),)))
    ex = exporter(sink.url, tmp_path)
    start = time.monotonic()
    ex.export(records())
    assert ex.force_flush(10)
    ex.shutdown(1)
    assert time.monotonic() - start >= 0.9  # the backoff alone would have retried after 10 ms
    assert len(sink.attempts) == 2 and len(spans_of(sink.accepted)) == 3


def test_other_errors_are_not_retried_and_the_batch_is_kept_aside(sink, tmp_path, caplog):
    sink.push(Reply(400, body=f'{{"message":"bad span for key {SECRET}"}}'.encode()))
    ex = exporter(sink.url, tmp_path, headers={"api-key": SECRET})
    ex.export(records())
    ex.force_flush(5)
    ex.shutdown(1)
    assert len(sink.attempts) == 1  # the OTLP specification retries 429, 502, 503 and 504 only
    assert len(list(Spool(str(tmp_path / "spool")).lines("rejected"))) == 3
    assert "the OTLP endpoint rejected a batch" in caplog.text and SECRET not in caplog.text


def test_gzip_compression(sink, tmp_path):
    ex = exporter(sink.url, tmp_path, gzip=True)
    ex.export(records())
    assert ex.force_flush(10)
    ex.shutdown(1)
    (request,) = sink.accepted
    assert request.headers["content-encoding"] == "gzip"
    assert len(parse(gzip.decompress(request.raw)).resource_spans[0].scope_spans[0].spans) == 3


def test_runs_beside_the_trunk_exporter(sink, tmp_path):
    trunk_trace.configure(token="tt-token-123456", api_address=sink.url, repo_url=REPO_URL,
                          otlp_endpoint=f"{sink.url}/v1/traces", spool_dir=str(tmp_path / "spool"), summary=False)
    build()
    trunk_trace.shutdown(10)
    paths = sorted({request.path for request in sink.accepted})
    assert paths == ["/v1/metrics/trackEvents", "/v1/traces"]
    trunk = [e for r in sink.accepted if r.path.endswith("trackEvents") for e in r.body["events"]]
    otlp = spans_of([r for r in sink.accepted if r.path == "/v1/traces"])
    assert len(trunk) == len(otlp) == 4


# --- the environment ---


def test_environment_variables_as_the_specification_defines_them():
    config = Config.from_env({
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
        "OTEL_EXPORTER_OTLP_HEADERS": f"api-key={SECRET}, x-scope = team%2Fci ,broken",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=ci,service.name=ignored",
        "OTEL_SERVICE_NAME": "builds",
    })
    assert config.otlp_endpoint == "http://collector:4318/v1/traces"
    assert config.otlp_headers == {"api-key": SECRET, "x-scope": "team/ci"}
    assert config.otlp_timeout == 2.5
    assert config.otlp_compression == "gzip"
    assert config.otlp_resource == {"deployment.environment": "ci", "service.name": "builds"}
    assert SECRET not in repr(config)


def test_signal_specific_variables_win_and_the_traces_endpoint_is_used_as_is():
    config = Config.from_env({
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://otlp.example.com/custom/path",
        "OTEL_EXPORTER_OTLP_HEADERS": "a=1",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "b=2",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "1000",
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "3000",
    })
    assert config.otlp_endpoint == "https://otlp.example.com/custom/path"
    assert config.otlp_headers == {"b": "2"}
    assert config.otlp_timeout == 3.0


def test_otel_sdk_disabled_turns_the_exporter_off(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    names = [type(e).__name__ for e in build_resources(Config.from_env()).exporters]
    assert "OtlpHttpExporter" not in names
    monkeypatch.setenv("OTEL_SDK_DISABLED", "false")
    exporters = build_resources(Config.from_env()).exporters
    assert "OtlpHttpExporter" in [type(e).__name__ for e in exporters]
    for e in exporters:
        e.shutdown(0)


def test_bad_values_are_reported_not_raised(caplog):
    config = Config.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318", "OTEL_EXPORTER_OTLP_TIMEOUT": "soon"})
    assert config.otlp_endpoint is None and config.otlp_timeout == 10.0
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in caplog.text and "OTEL_EXPORTER_OTLP_TIMEOUT" in caplog.text
    with pytest.raises(ValueError, match="credentials"):
        trunk_trace.configure(otlp_endpoint="https://user:pw@otlp.example.com/v1/traces")


def test_import_stays_light():
    done = run_python(["-c", "import sys, trunk_trace; print(sorted(m for m in ('urllib3', 'gzip', 'trunk_trace.exporters.otlp', 'trunk_trace.exporters.chrome') if m in sys.modules))"],
                      {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))})
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
