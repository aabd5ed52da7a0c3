#!/usr/bin/env python
"""What the pytest plugin costs per test, delivery to a loopback API server included.

    python benchmarks/pytest_overhead.py              # 2,000 tests, 11 rounds, about a minute
    python benchmarks/pytest_overhead.py --rounds 3 --tests 500
    python benchmarks/pytest_overhead.py --check      # exit 1 when over the budget
    python benchmarks/pytest_overhead.py --split      # also: the fixed cost and the cost per test
    python benchmarks/pytest_overhead.py --local      # no token: the timing summary instead of sending

Generates a suite of trivial tests in a temporary directory and runs it with
``python -m pytest`` as a subprocess, plugin off and on (``--trunk-trace``),
rounds interleaved so background load hits both alike. With the plugin on,
events go to a Trunk API stand-in on 127.0.0.1 (``TRUNK_API_TOKEN`` set), so
the figure includes building, batching and sending every event, and the
process's exit with its delivery. Reports the medians, their ratio and the
added microseconds per test; the budget is 50 us per test. Without
``--check`` the exit code is always 0.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

BUDGET_US_PER_TEST = 50.0


class _Api(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    events = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with _Api.lock:
            _Api.events += len(json.loads(body).get("events", []))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


def write_suite(directory: Path, tests: int, per_file: int = 100) -> None:
    for start in range(0, tests, per_file):
        count = min(per_file, tests - start)
        body = "".join(f"def test_{start + i}():\n    assert True\n\n" for i in range(count))
        (directory / f"test_gen_{start // per_file:03d}.py").write_text(body)


def run_suite(directory: Path, env: dict, plugin: bool) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the pytest process) of one run."""
    # Only our plugin is loaded (PYTEST_DISABLE_PLUGIN_AUTOLOAD in the environment), in both runs:
    # other installed plugins (hypothesis, pytest-benchmark's git calls, ...) cost as much again
    # as the whole suite and vary from run to run, which hides what this measures.
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "trunk_trace.integrations.pytest_plugin", str(directory)]
    if plugin:
        args.append("--trunk-trace")
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(args, env=env, cwd=directory, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
    if result.returncode != 0:
        sys.exit(f"pytest failed (exit {result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return elapsed, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--check", action="store_true", help=f"exit 1 when over {BUDGET_US_PER_TEST:g} us per test")
    parser.add_argument(
        "--split", action="store_true",
        help="also run a suite a tenth the size, and split the cost into a fixed part and a part per test",
    )
    parser.add_argument(
        "--local", action="store_true",
        help="no token: the timing summary at exit instead of delivery to the loopback API",
    )
    options = parser.parse_args()
    sizes = [options.tests] + ([max(1, options.tests // 10)] if options.split else [])

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRUNK_", "CI", "GITHUB_", "OTEL_", "PYTEST_"))}
    # Bytecode caches as on a developer's machine: without them every run compiles the
    # modules the plugin brings in (urllib3, attrs, ...), a cost real runs do not pay.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(
        PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",
        TRUNK_API_TOKEN="benchmark",
        TRUNK_PUBLIC_API_ADDRESS=f"http://127.0.0.1:{server.server_address[1]}",
        TRUNK_REPO_URL="https://github.com/acme/app",
        TRUNK_TRACE_SUMMARY="0",
    )
    if options.local:
        del env["TRUNK_API_TOKEN"]
        env["TRUNK_TRACE_SUMMARY"] = "1"

    # runs[(tests, plugin)]: (wall, CPU) of each round
    runs: dict[tuple[int, bool], list[tuple[float, float]]] = {(n, p): [] for n in sizes for p in (False, True)}
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as spool:
        # A spool of its own: events other runs left in the default spool would be replayed here.
        env["TRUNK_TRACE_SPOOL_DIR"] = spool
        directories = {}
        for n in sizes:
            directories[n] = Path(tmp) / str(n)
            directories[n].mkdir()
            write_suite(directories[n], n)
            (directories[n] / "pytest.ini").write_text("[pytest]\n")  # keep the benchmark's own config out
            run_suite(directories[n], env, plugin=False)  # warm the file system and bytecode caches
            run_suite(directories[n], env, plugin=True)
        _Api.events = 0
        for _ in range(options.rounds):
            for n in sizes:
                for plugin in (False, True):
                    runs[(n, plugin)].append(run_suite(directories[n], env, plugin))
    server.shutdown()

    tests = options.tests
    expected = 0 if options.local else options.rounds * sum(n + 1 for n in sizes)
    output = "the timing summary (no token)" if options.local else "delivery to the loopback API"
    print(f"pytest, {tests} trivial tests, {options.rounds} rounds, plugin output: {output}; medians (min in brackets)")
    print(f"  events delivered to the loopback API: {_Api.events} of {expected}")
    added_wall = 0.0
    for index, measure in ((0, "wall"), (1, "CPU ")):
        off = [run[index] for run in runs[(tests, False)]]
        on = [run[index] for run in runs[(tests, True)]]
        off_s, on_s = statistics.median(off), statistics.median(on)
        per_test_us = (on_s - off_s) / tests * 1e6
        added_wall = per_test_us if index == 0 else added_wall
        print(
            f"  {measure}: off {off_s * 1e3:7.1f} ms [{min(off) * 1e3:.1f}]  on {on_s * 1e3:7.1f} ms [{min(on) * 1e3:.1f}]"
            f"  ratio {on_s / off_s:.3f}  added {per_test_us:5.1f} us/test (budget {BUDGET_US_PER_TEST:g})"
        )
    # Other load on the machine shifts whole rounds: the difference within each round (plugin on
    # minus the off run just before it) is steadier than the difference of the medians.
    paired = {n: sorted(on[0] - off[0] for off, on in zip(runs[(n, False)], runs[(n, True)])) for n in sizes}
    print(f"  wall, paired by round: median added {statistics.median(paired[tests]) / tests * 1e6:5.1f} us/test"
          f"  (rounds: {' '.join(f'{d / tests * 1e6:.0f}' for d in paired[tests])})")
    if options.split:
        # Added wall time = fixed + per_test * tests, through the two suites' paired medians.
        small = sizes[1]
        big_s, small_s = statistics.median(paired[tests]), statistics.median(paired[small])
        per_test = (big_s - small_s) / (tests - small)
        fixed = small_s - per_test * small
        print(f"  split (wall, {small} and {tests} tests): about {fixed * 1e3:.0f} ms once per run"
              f" + {per_test * 1e6:.1f} us per test")
    if options.check and (added_wall > BUDGET_US_PER_TEST or _Api.events != expected):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
