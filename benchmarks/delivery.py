"""Delivery at exit: 10,000 events finished just before the process ends.

    python benchmarks/delivery.py [--events 10000] [--runs 3]

For each scenario (a healthy loopback sink, a refused port, a server that
accepts and never answers) a fresh Python process finishes the events and
exits; we measure the exit latency (last event to process end) and count what
reached the sink and what waits in the spool. OpenTelemetry's OTLP/HTTP
exporter with its BatchSpanProcessor runs the same scenarios when installed
(``pip install opentelemetry-sdk opentelemetry-exporter-otlp-proto-http``).
Then the memory held while the endpoint is down: growth of the peak RSS for
200,000 events.

Targets: healthy <= 0.3 s, all delivered; refused <= 0.5 s, all spooled;
silent <= budget + 0.5 s, all spooled; memory growth <= 64 MiB.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from sink import HANG, Sink, closed_port  # noqa: E402

BUDGET = 2.0

TRUNK_SCRIPT = """
import sys, time
from trunk_trace import track
with track("build"):
    for n in range(int(sys.argv[1]) - 1):
        with track("step"):
            pass
print(time.time(), flush=True)
"""

OTEL_SCRIPT = """
import sys, time
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
provider = TracerProvider()
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=sys.argv[2] + "/v1/traces")))
trace.set_tracer_provider(provider)
tracer = trace.get_tracer("bench")
with tracer.start_as_current_span("build"):
    for n in range(int(sys.argv[1]) - 1):
        with tracer.start_as_current_span("step"):
            pass
print(time.time(), flush=True)
"""

MEMORY_SCRIPT = """
import resource, sys
from trunk_trace import track
import trunk_trace
with track("warm-up"):
    pass
trunk_trace.flush(1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with track("build"):
    for n in range(int(sys.argv[1])):
        with track("step"):
            pass
trunk_trace.flush(5)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) / 1024, flush=True)  # ru_maxrss is in KiB on Linux
"""


def count_spooled(spool_dir: str) -> int:
    total = 0
    pending = os.path.join(spool_dir, "pending")
    if os.path.isdir(pending):
        for name in os.listdir(pending):
            with open(os.path.join(pending, name), "rb") as file:
                total += file.read().count(b"\n")
    return total


def otel_received(sink: Sink) -> int:
    # OTLP/HTTP sends protobuf; count the spans by their names: Span.name is field 5, a
    # length-delimited string, so it is encoded as b"*" (5 << 3 | 2), its length, its bytes.
    return sum(request.raw.count(b"*\x04step") + request.raw.count(b"*\x05build") for request in sink.accepted)


def run_once(library: str, scenario: str, events: int) -> dict:
    spool_dir = tempfile.mkdtemp(prefix="trunk-trace-bench-")
    with Sink() as sink:
        if scenario == "silent":
            sink.default = HANG
        url = f"http://127.0.0.1:{closed_port()}" if scenario == "refused" else sink.url
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TRUNK_", "OTEL_"))}
        env["PYTHONPATH"] = ROOT
        if library == "trunk_trace":
            script, args = TRUNK_SCRIPT, [str(events)]
            env.update(TRUNK_API_TOKEN="bench-token", TRUNK_PUBLIC_API_ADDRESS=url, TRUNK_REPO_URL="github.com/acme/bench",
                       TRUNK_TRACE_SPOOL_DIR=spool_dir, TRUNK_TRACE_EXIT_TIMEOUT=str(BUDGET))
        else:
            script, args = OTEL_SCRIPT, [str(events), url]
        done = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=120)
        ended = time.time()
        last_event = float(done.stdout.split()[0])
        delivered = len(sink.ids()) if library == "trunk_trace" else otel_received(sink)
    spooled = count_spooled(spool_dir)
    shutil.rmtree(spool_dir, ignore_errors=True)
    return {"latency": ended - last_event, "delivered": delivered, "spooled": spooled, "code": done.returncode}


def memory_growth(events: int) -> float:
    spool_dir = tempfile.mkdtemp(prefix="trunk-trace-bench-")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRUNK_", "OTEL_"))}
    env.update(PYTHONPATH=ROOT, TRUNK_API_TOKEN="bench-token", TRUNK_PUBLIC_API_ADDRESS=f"http://127.0.0.1:{closed_port()}",
               TRUNK_REPO_URL="github.com/acme/bench", TRUNK_TRACE_SPOOL_DIR=spool_dir, TRUNK_TRACE_EXIT_TIMEOUT="5",
               TRUNK_TRACE_SPOOL_MAX_MB="1000")  # keep all 200,000: this measures memory, not the cap
    done = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(events)], env=env, capture_output=True, text=True, timeout=300)
    spooled = count_spooled(spool_dir)
    shutil.rmtree(spool_dir, ignore_errors=True)
    print(f"memory: {events:,} events with the endpoint down: peak RSS grew {float(done.stdout.split()[0]):.1f} MiB "
          f"(target <= 64); {spooled:,} spooled")
    return float(done.stdout.split()[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--memory-events", type=int, default=200_000)
    args = parser.parse_args()
    libraries = ["trunk_trace"]
    try:
        import opentelemetry.exporter.otlp.proto.http  # noqa: F401
        import opentelemetry.sdk  # noqa: F401

        libraries.append("opentelemetry")
    except ImportError:
        print("(OpenTelemetry's OTLP/HTTP exporter is not installed: measuring trunk_trace alone)")
    targets = {"healthy": 0.3, "refused": 0.5, "silent": BUDGET + 0.5}
    print(f"{args.events:,} events finished just before exit; exit budget {BUDGET:g} s; median of {args.runs} runs")
    print(f"{'library':<14} {'scenario':<9} {'exit latency':>13} {'target':>7} {'delivered':>10} {'spooled':>8} {'lost':>7}")
    for library in libraries:
        for scenario in ("healthy", "refused", "silent"):
            runs = [run_once(library, scenario, args.events) for _ in range(args.runs)]
            latency = statistics.median(r["latency"] for r in runs)
            delivered = min(r["delivered"] for r in runs)
            spooled = min(r["spooled"] for r in runs)
            lost = max(args.events - r["delivered"] - r["spooled"] for r in runs)
            target = f"{targets[scenario]:.1f} s" if library == "trunk_trace" else ""
            print(f"{library:<14} {scenario:<9} {latency:>11.3f} s {target:>7} {delivered:>10,} {spooled:>8,} {lost:>7,}")
    memory_growth(args.memory_events)
    return 0


if __name__ == "__main__":
    sys.exit(main())
