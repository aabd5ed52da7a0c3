"""What `trunk-trace run -- true` costs over `true` alone, with no token set.

    python benchmarks/cli_run.py [--runs N]

Runs both commands N times each, interleaved, and prints the medians and the
difference (target: at most 150 ms). It runs the console script found on PATH
(as users do) and `python -m trunk_trace.cli` (no launcher script in between).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

TARGET_MS = 150.0


def timed(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter() - start) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    options = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRUNK_", "OTEL_"))}
    true = shutil.which("true") or "true"
    commands = {"true": [true], "python -m trunk_trace.cli run -- true": [sys.executable, "-m", "trunk_trace.cli", "run", "--", true]}
    script = shutil.which("trunk-trace")
    if script:
        commands["trunk-trace run -- true"] = [script, "run", "--", true]
    times: dict[str, list[float]] = {name: [] for name in commands}
    for name, command in commands.items():
        timed(command, env)  # warm the page cache
    for _ in range(options.runs):
        for name, command in commands.items():
            times[name].append(timed(command, env))
    base = statistics.median(times["true"])
    print(f"{'command':<45} {'median ms':>10} {'over true':>10}")
    for name, samples in times.items():
        median = statistics.median(samples)
        verdict = "" if name == "true" else ("PASS" if median - base <= TARGET_MS else "MISS")
        print(f"{name:<45} {median:>10.1f} {median - base:>10.1f}  {verdict}")
    print(f"target: at most {TARGET_MS:.0f} ms over `true`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
