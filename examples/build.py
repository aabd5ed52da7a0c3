"""An example build, instrumented with trunk_trace. Needs no account.

Run it with ``python examples/build.py``: at exit it prints the timing
summary (a waterfall of the steps) to stderr. Set ``TRUNK_TRACE_FILE=events.jsonl``
to also keep every event in a JSON Lines file.
"""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import trunk_trace
from trunk_trace import track

MODULES = ["parser", "checker", "codegen", "runtime"]


@track("fetch dependencies", kind="step")
def fetch_dependencies() -> None:
    time.sleep(0.15)  # stands in for a package download


def compile_module(name: str) -> None:
    with track(f"compile {name}", tags={"module": name}) as ev:
        time.sleep(0.05 + 0.02 * len(name) / 4)
        ev.metric("objects", len(name) * 3)


@track
def lint() -> int:
    # A real child process, as a build would run a linter.
    result = subprocess.run([sys.executable, "-c", "print('lint ok')"], capture_output=True, text=True)
    trunk_trace.current().tag("exit_code", result.returncode)
    return result.returncode


@track("tests")
def run_tests() -> None:
    for shard in range(3):
        with track("test shard", tags={"shard": shard}):
            time.sleep(0.04)


def main() -> None:
    with track("build", tags={"target": "example"}):
        fetch_dependencies()
        with track("compile"), ThreadPoolExecutor(max_workers=2) as pool:
            # bind() carries the open "compile" block into the worker threads.
            list(pool.map(trunk_trace.bind(compile_module), MODULES))
        lint()
        run_tests()
        with track("package") as ev:
            time.sleep(0.05)
            ev.metric("size_kb", 512)


if __name__ == "__main__":
    main()
