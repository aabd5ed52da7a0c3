"""An example noxfile, traced by trunk_trace. Needs no account.

The last line, ``trunk_trace.integrations.nox.instrument()``, traces every
session. Run it from this directory::

    nox                 # sessions one after the other
    nox -j 2            # in parallel (nox 2026.10 and later): one chain across the workers

The sessions run without virtualenvs (``python=False``), so it is quick. At
exit the timing summary is printed to stderr; ``TRUNK_TRACE_FILE=events.jsonl``
keeps every event.
"""

from __future__ import annotations

import nox

import trunk_trace.integrations.nox

nox.options.sessions = ["lint", "tests"]


@nox.session(python=False, allow_parallel=True)
def lint(session: nox.Session) -> None:
    session.run("python", "-c", "print('lint ok')")


@nox.session(python=False, allow_parallel=True)
@nox.parametrize("suite", ["unit", "integration"])
def tests(session: nox.Session, suite: str) -> None:
    session.run_install("python", "-c", "print('dependencies ready')")
    # The command's own blocks join the chain, under its command event.
    session.run(
        "python", "-c", f"import time, trunk_trace\nwith trunk_trace.track('{suite} tests'): time.sleep(0.05)",
        env={"TRUNK_TRACE_SUMMARY": "0"},  # one summary, from nox's process
    )


@nox.session(python=False, default=False)
def docs(session: nox.Session) -> None:
    session.skip("docs are built by another job")  # recorded as SKIPPED (run it with -s docs)


trunk_trace.integrations.nox.instrument()
