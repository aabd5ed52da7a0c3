"""An example invoke build, traced by trunk_trace. Needs no account.

``invoke.yaml`` beside this file turns tracing on for every task with one line.
Run it from this directory::

    invoke build        # setup (a pre-task of compile and test), compile, test, build

At exit the timing summary is printed to stderr; ``TRUNK_TRACE_FILE=events.jsonl``
keeps every event. ``invoke lint`` shows the per-task opt-in (``klass=TracedTask``),
which also works without invoke.yaml.
"""

from __future__ import annotations

from invoke import task

from trunk_trace import track
from trunk_trace.integrations.invoke import TracedTask


@task
def setup(c):
    """Prepare the build directory."""
    c.run("python -c \"import pathlib; pathlib.Path('build').mkdir(exist_ok=True)\"")


@task(pre=[setup])
def compile(c):
    """Compile (stands in for a compiler)."""
    for module in ("parser", "runtime"):
        c.run(f"python -c \"import time; time.sleep(0.05); print('compiled {module}')\"")


@task(pre=[setup])
def test(c):
    """Run the tests. The command's own blocks join the chain, under the command."""
    c.run(
        "python -c \"import time, trunk_trace\nwith trunk_trace.track('unit tests'): time.sleep(0.05)\"",
        env={"TRUNK_TRACE_SUMMARY": "0"},  # one summary, from invoke's process
    )
    # warn=True: the command is recorded as FAILURE (exit_code 1), the task goes on.
    c.run("python -c \"import sys; sys.exit(1)\"", warn=True)


@task(pre=[compile, test], default=True)
def build(c):
    """The whole build: a block inside a task nests under the task."""
    with track("package"):
        c.run("python -c \"print('package ok')\"")


@task(klass=TracedTask)
def lint(c):
    """Opted in on its own: traced even without invoke.yaml."""
    c.run("python -c \"print('lint ok')\"")
