#!/usr/bin/env python
"""How much trunk_trace costs per block, per decorated call, at import and in memory.

    python benchmarks/overhead.py            # about 30 s
    python benchmarks/overhead.py --quick    # about 5 s, noisier
    python benchmarks/overhead.py --check    # exit 1 when a target is missed

Every time is compared with a pure-Python floor measured in the same run, so the
ratios mean something on any machine; absolute times are printed for context.
Cases are interleaved repeat by repeat (so background load hits all of them
alike) and the median of the repeats is reported. Nothing here is a timed test:
without ``--check`` the exit code is always 0.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import tracemalloc
from contextvars import ContextVar
from time import perf_counter_ns

import trunk_trace
from trunk_trace import _state, track

# Targets (issue 2, "Speed").
TRACK_RATIO = 2.0  # with track(...) depth-3, against the floor context manager
DECORATOR_RATIO = 2.5  # @track call, against the floor decorator
IMPORT_RATIO = 0.5  # import trunk_trace, against import opentelemetry.sdk.trace
HELD_EVENT_BYTES = 600  # memory per finished event waiting for the exporter thread


# --- the floor: the least a tracer written in Python can do ---------------------------------
# Read the clock at enter and exit, set and reset a ContextVar, append one tuple to a list.

_floor_current: ContextVar = ContextVar("floor", default=None)
_floor_sink: list = []


class FloorBlock:
    __slots__ = ("name", "tags", "token", "start")

    def __init__(self, name, tags=None):
        self.name = name
        self.tags = tags

    def __enter__(self):
        self.token = _floor_current.set(self)
        self.start = perf_counter_ns()
        return self

    def __exit__(self, exc_type, exc, tb):
        _floor_current.reset(self.token)
        _floor_sink.append((self.name, self.tags, self.start, perf_counter_ns()))
        return False


def floor_decorator(func):
    name = func.__qualname__

    def wrapper(*args, **kwargs):
        token = _floor_current.set(name)
        start = perf_counter_ns()
        try:
            return func(*args, **kwargs)
        finally:
            _floor_current.reset(token)
            _floor_sink.append((name, None, start, perf_counter_ns()))

    return wrapper


# --- the workloads: one iteration is one depth-3 nest (3 blocks) or one call ------------------


def nest_with(block):
    def run(n):
        for _ in range(n):
            with block("build", tags={"target": "x86_64", "attempt": 1}):
                with block("compile", tags={"target": "x86_64", "attempt": 2}):
                    with block("cc", tags={"target": "x86_64", "attempt": 3}):
                        pass

    return run


def call_loop(func):
    def run(n):
        for i in range(n):
            func(i)

    return run


def work(x):
    return x


# --- trunk_trace's processor: live, or paused so finished events stay queued ------------------


class Paused:
    """Hold the processor's export lock: its thread blocks in ``drain()``, events stay queued."""

    def __enter__(self):
        self.processor = _state.current_processor()
        self.processor._export_lock.acquire()
        return self.processor

    def __exit__(self, *exc):
        self.processor._export_lock.release()
        self.processor.drain()


def paused(run):
    def paused_run(n):
        with Paused():
            return timed(run, n)

    paused_run.timed_inside = True
    return paused_run


class NoOpExporter:
    """Takes every batch and does nothing with it: the processor's own cost, as OpenTelemetry's case has."""

    def export(self, records):
        pass

    def force_flush(self, timeout=None):
        return True

    def shutdown(self, timeout=None):
        pass


DEFAULT_OUTPUTS = dict(summary=True, token=None, file=None, exporters=())
NO_OP_OUTPUTS = dict(summary=False, token=None, file=None, exporters=(NoOpExporter(),))


def reconfigure(settings):
    """Switch outputs; reset() first drops the previous ones unprinted (no summary at each switch)."""
    trunk_trace.reset()
    trunk_trace.configure(**settings)


def with_outputs(run, settings):
    """*run* timed with the processor live and feeding *settings*' exporters (configured outside the timing)."""

    def configured_run(n):
        reconfigure(settings)
        try:
            return timed(run, n)
        finally:
            reconfigure(DEFAULT_OUTPUTS)

    configured_run.timed_inside = True
    return configured_run


def timed(run, n):
    gc.collect()
    gc.disable()
    try:
        start = perf_counter_ns()
        run(n)
        return perf_counter_ns() - start
    finally:
        gc.enable()


def measure(cases, seconds, repeats):
    """Per-iteration times (ns) of every case: [median, min] over interleaved repeats."""
    sizes = {}
    for name, run in cases.items():  # warm up and pick n so that one repeat takes `seconds`
        n = 200
        while True:
            ns = run(n) if getattr(run, "timed_inside", False) else timed(run, n)
            after_case()
            if ns > 0.02e9 or n > 1e7:
                break
            n *= 4
        sizes[name] = max(1, int(n * seconds * 1e9 / ns))
    samples = {name: [] for name in cases}
    for _ in range(repeats):
        for name, run in cases.items():
            n = sizes[name]
            ns = run(n) if getattr(run, "timed_inside", False) else timed(run, n)
            after_case()
            samples[name].append(ns / n)
    return {name: (statistics.median(s), min(s)) for name, s in samples.items()}


def after_case():
    """Outside the timing: empty every queue so that repeats start alike."""
    _floor_sink.clear()
    if _state.STATE.processor is not None:
        _state.STATE.processor.drain()


# --- OpenTelemetry, when installed ----------------------------------------------------------


def otel_cases():
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    except ImportError:
        return None, {}

    class NoOpExporter(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    # A queue large enough that no span is dropped (trunk_trace never drops either).
    provider.add_span_processor(BatchSpanProcessor(NoOpExporter(), max_queue_size=1 << 20))
    tracer = provider.get_tracer("benchmark")

    def span(name, tags):
        return tracer.start_as_current_span(name, attributes=tags)

    decorated = tracer.start_as_current_span("work")(work)
    return provider, {"otel.with": nest_with(span), "otel.deco": call_loop(decorated)}


# --- import time, in fresh interpreters -----------------------------------------------------


def import_ms(statement, runs):
    """Median milliseconds of *statement* in fresh interpreters started with ``-S``.

    ``-S`` skips ``site``, whose ``.pth`` files may already import typing, enum,
    threading and more; the packages are found through ``PYTHONPATH`` instead.
    """
    code = f"import time; t = time.perf_counter_ns()\n{statement}\nprint(time.perf_counter_ns() - t)"
    here = os.path.dirname(os.path.dirname(os.path.abspath(trunk_trace.__file__)))
    path = os.pathsep.join([here] + [p for p in sys.path if p])
    env = dict(os.environ, PYTHONPATH=path, TRUNK_TRACE_SUMMARY="0")
    times = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-S", "-c", code], env=env, capture_output=True, text=True)
        if out.returncode != 0:
            return None
        times.append(int(out.stdout.split()[-1]) / 1e6)
    return statistics.median(times)


# --- memory per held event ------------------------------------------------------------------


def held_event_bytes(run, n, events_per_iteration):
    """Bytes allocated and still alive per finished event queued for the exporter thread."""
    run(2)
    with Paused() as processor:
        before_queue = len(processor._queue)
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        run(n)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        held = len(processor._queue) - before_queue
    assert held == n * events_per_iteration, (held, n)
    return (after - before) / held


# --- report ---------------------------------------------------------------------------------


def verdict(value, limit):
    if value is None:
        return "n/a"
    return "PASS" if value <= limit else "MISS"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repeats (about 5 s)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    seconds, repeats, import_runs, memory_n = (0.04, 3, 3, 2000) if args.quick else (0.2, 9, 9, 20000)

    # The default outputs: the summary exporter folds every record into its tree.
    # No token (nothing sent), no file. reset() at the end drops it unprinted.
    reconfigure(DEFAULT_OUTPUTS)

    floor_deco = floor_decorator(work)
    track_deco = track(work)
    cases = {
        "floor.with": nest_with(FloorBlock),
        "track.with": nest_with(track),
        "track.with.noop": with_outputs(nest_with(track), NO_OP_OUTPUTS),
        "track.with.hot": paused(nest_with(track)),
        "floor.deco": call_loop(floor_deco),
        "track.deco": call_loop(track_deco),
        "track.deco.noop": with_outputs(call_loop(track_deco), NO_OP_OUTPUTS),
        "track.deco.hot": paused(call_loop(track_deco)),
    }
    provider, otel = otel_cases()
    cases.update(otel)
    times = measure(cases, seconds, repeats)
    if provider is not None:
        provider.shutdown()

    memory_nest = held_event_bytes(nest_with(track), memory_n, 3)
    memory_bare = held_event_bytes(bare_loop, memory_n, 1)
    trunk_trace.reset()  # drop the summary: no output at exit

    imports = {
        "trunk": import_ms("import trunk_trace", import_runs),
        "otel": import_ms("import opentelemetry.sdk.trace", import_runs) if provider is not None else None,
        "first block": import_ms("import trunk_trace\nwith trunk_trace.track('x'): pass", import_runs),
        "first deco": import_ms("import trunk_trace\n@trunk_trace.track\ndef f(): pass", import_runs),
    }

    rows = []  # (label, unit, median, min, ratio, target text, verdict)

    def ratio_row(label, key, floor_key, per, limit=None):
        if key not in times:
            rows.append((label, per, None, None, None, "", "skipped: opentelemetry-sdk not installed"))
            return None
        median, low = times[key]
        ratio = median / times[floor_key][0]
        result = verdict(ratio, limit) if limit else ("" if key == floor_key else "info")
        rows.append((label, per, median / 1000, low / 1000, ratio, f"<= {limit}x" if limit else "", result))
        return result

    results = []
    ratio_row("floor: class CM + ContextVar + list.append", "floor.with", "floor.with", "us/nest")
    results.append(ratio_row("track: with, default outputs live", "track.with", "floor.with", "us/nest", TRACK_RATIO))
    ratio_row("track: with, no-op exporter live", "track.with.noop", "floor.with", "us/nest")
    ratio_row("track: with, exporter paused (hot path)", "track.with.hot", "floor.with", "us/nest")
    ratio_row("otel: start_as_current_span, batch+no-op", "otel.with", "floor.with", "us/nest")
    ratio_row("floor: closure decorator", "floor.deco", "floor.deco", "us/call")
    results.append(ratio_row("track: @track call, default outputs live", "track.deco", "floor.deco", "us/call", DECORATOR_RATIO))
    ratio_row("track: @track call, no-op exporter live", "track.deco.noop", "floor.deco", "us/call")
    ratio_row("track: @track call, exporter paused", "track.deco.hot", "floor.deco", "us/call")
    ratio_row("otel: @start_as_current_span call", "otel.deco", "floor.deco", "us/call")

    import_ratio = imports["trunk"] / imports["otel"] if imports["trunk"] and imports["otel"] else None
    import_result = verdict(import_ratio, IMPORT_RATIO)
    results.append(import_result if import_ratio is not None else None)
    memory_result = verdict(memory_nest, HELD_EVENT_BYTES)
    results.append(memory_result)

    print(f"trunk_trace {trunk_trace.__version__} overhead: Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, {repeats} repeats of ~{seconds} s per case")
    print("nest = three nested blocks, two tags each (per block = nest / 3); ratios use medians\n")
    print(f"{'case':<44} {'unit':<8} {'median':>8} {'min':>8} {'ratio':>7}  {'target':<9} result")
    for label, unit, median, low, ratio, target, result in rows:
        if median is None:
            print(f"{label:<44} {unit:<8} {'':>8} {'':>8} {'':>7}  {'':<9} {result}")
            continue
        print(f"{label:<44} {unit:<8} {median:8.2f} {low:8.2f} {ratio:6.2f}x  {target:<9} {result}")
    print()
    fmt = lambda ms: "n/a" if ms is None else f"{ms:.1f} ms"  # noqa: E731
    print(f"{'import trunk_trace':<44} {fmt(imports['trunk']):>10}   ratio "
          f"{'n/a' if import_ratio is None else f'{import_ratio:.2f}x'} of otel (<= {IMPORT_RATIO}x) {import_result}")
    otel_note = "" if provider is not None else "   (opentelemetry-sdk not installed)"
    print(f"{'import opentelemetry.sdk.trace':<44} {fmt(imports['otel']):>10}{otel_note}")
    print(f"{'import trunk_trace + first with-block':<44} {fmt(imports['first block']):>10}   info (lazy imports)")
    print(f"{'import trunk_trace + first @track':<44} {fmt(imports['first deco']):>10}   info (imports wrapt)")
    print()
    print(f"{'held event, depth-3 nest with 2 tags':<44} {memory_nest:7.0f} B   (<= {HELD_EVENT_BYTES} B) {memory_result}")
    print(f"{'held event, bare with track(name)':<44} {memory_bare:7.0f} B   info")
    print()
    print("live: the processor thread drains as usual (builds wire records, feeds the summary).")
    print("paused: its export lock is held, so finished events stay queued (their export is")
    print("not timed); 'held' is what one such queued event keeps alive, per tracemalloc.")

    missed = [r for r in results if r == "MISS"]
    return 1 if args.check and missed else 0


def bare_loop(n):
    for _ in range(n):
        with track("step"):
            pass


if __name__ == "__main__":
    sys.exit(main())
