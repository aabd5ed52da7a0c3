"""pytest plugin: one event per session and per test, also across pytest-xdist workers.

Registered through the ``pytest11`` entry point and inert until enabled by
``pytest --trunk-trace``, the ini option ``trunk_trace = true`` or the
environment variable ``TRUNK_TRACE_PYTEST=1``.

Events: the session is kind ``pipeline`` named ``pytest`` (the command-line
arguments in the tag ``args``, the exit status in ``exit_code``), ``SUCCESS``
when pytest exits 0, ``CANCELLED`` on Ctrl-C, else ``FAILURE``. Each test
that ran is kind ``test``, named by its node id, with the tag ``outcome``:

=================================  ============  ===========
pytest's result                    conclusion    ``outcome``
=================================  ============  ===========
passed                             SUCCESS       passed
failed (a failed subtest too)      FAILURE       failed
error in setup or teardown         FAILURE       error (``phase`` tag)
skipped                            SKIPPED       skipped
xfail                              SKIPPED       xfailed
non-strict xpass                   SUCCESS       xpassed
strict xpass                       FAILURE       failed
=================================  ============  ===========

Reruns (pytest-rerunfailures) fold into the test's one event, concluded by
the last attempt, with the tag ``reruns``. Blocks the code under test opens
with ``track()`` nest under its test's event.

With pytest-xdist, the process that runs a test makes its event id when the
test starts (so blocks opened by the test can point at it) and sends it to
the controller on the test's reports; the controller records every test once.
Workers join the controller's chain: the root is open while they start.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Optional, Tuple

import pytest

from .._context import _CURRENT
from .. import _state
from .._event import Conclusion, Event, RemoteParent
from .._state import env_flag
from .._track import DisabledEvent, close_event, end_event, open_event, record_event, start_event, track
from . import exit_status_conclusion

ENV_ENABLE = "TRUNK_TRACE_PYTEST"
_WORKER_INPUT = "trunk_trace_parent"  # what the controller hands each xdist worker
_ID_ATTR = "trunk_trace_id"  # what a worker's reports carry back: the test's event id
_TAGS_ATTR = "trunk_trace_tags"
_METRICS_ATTR = "trunk_trace_metrics"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("trunk_trace", "trunk_trace: time the session and each test")
    group.addoption(
        "--trunk-trace", action="store_true", default=False, dest="trunk_trace",
        help=f"record the session and each test as trunk_trace events (or ini trunk_trace = true, or {ENV_ENABLE}=1)",
    )
    parser.addini("trunk_trace", type="bool", default=False, help="record the session and each test as trunk_trace events")


def _enabled(config: pytest.Config) -> bool:
    return bool(
        config.getoption("trunk_trace", False)
        or env_flag(os.environ.get(ENV_ENABLE))
        or config.getini("trunk_trace")
    )


def pytest_configure(config: pytest.Config) -> None:
    worker_input = getattr(config, "workerinput", None)
    if worker_input is not None:  # an xdist worker: enabled when its controller is
        parent = worker_input.get(_WORKER_INPUT)
        if parent:
            chain_id, event_id, key, path = parent
            root = RemoteParent(event_id, key, chain_id)
            root.path = path  # children's keys extend the full path, as the controller's do
            config.pluginmanager.register(_WorkerTests(root), "trunk_trace_worker")
    elif _enabled(config):
        config.pluginmanager.register(_Controller(config), "trunk_trace_session")


class _LocalTests:
    """Where tests run: each test's event is current from its setup to its teardown."""

    def __init__(self, parent: Event | RemoteParent) -> None:
        self.parent = parent
        self.running: Dict[str, Tuple[Event, Any]] = {}

    # logstart opens the protocol of an item (reruns included) and is a plain hook:
    # cheaper than a wrapper around pytest_runtest_protocol. The test's last report
    # (see _last_report) closes it, so no logfinish hook is needed (one call less per test).
    def pytest_runtest_logstart(self, nodeid: str) -> None:
        ev = start_event(track(nodeid, kind="test"), self.parent)
        if ev is not None:
            self.running[nodeid] = (ev, _CURRENT.set(ev))

    def finish(self, nodeid: str) -> Optional[Event]:
        """The test's event, no longer current: its last report is in."""
        running = self.running.pop(nodeid, None)
        if running is None:
            return None
        try:
            _CURRENT.reset(running[1])
        except ValueError:
            pass  # reset from another context than the test ran in: nothing of ours to restore
        return running[0]


class _WorkerTests(_LocalTests):
    """An xdist worker's tests: their reports carry the event id to the controller."""

    @pytest.hookimpl(tryfirst=True)  # before xdist sends the report to the controller
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        running = self.running.get(report.nodeid)
        if running is not None:
            ev = running[0]
            setattr(report, _ID_ATTR, ev.id)
            if report.when == "teardown":  # what the test added to its own event
                if ev._tags:
                    setattr(report, _TAGS_ATTR, dict(ev._tags))
                if ev._metrics:
                    setattr(report, _METRICS_ATTR, dict(ev._metrics))
                if _last_report(report):
                    self.finish(report.nodeid)


class _Controller:
    """The process that reports: holds the session's event and records each test once."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        args = " ".join(str(arg) for arg in config.invocation_params.args)
        root = open_event(track("pytest", kind="pipeline", tags={"args": args}))
        self.root: Optional[Event] = None if isinstance(root, DisabledEvent) else root
        self.local: Optional[_LocalTests] = None
        self.pending: Dict[str, List[Any]] = {}
        self.interrupted = False

    def pytest_sessionstart(self) -> None:
        # Tests run here unless xdist distributes them (its "dsession" plugin is then registered).
        if self.root is not None and not self.config.pluginmanager.has_plugin("dsession"):
            self.local = _LocalTests(self.root)
            self.config.pluginmanager.register(self.local, "trunk_trace_tests")

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:  # xdist, before a worker starts
        if self.root is not None:
            root = self.root
            node.workerinput[_WORKER_INPUT] = [root.chain_id, root.id, root.key, root.path]

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.root is None:
            return
        nodeid = report.nodeid
        reports = self.pending.get(nodeid)
        if reports is None:
            reports = self.pending[nodeid] = [report]
        else:
            reports.append(report)
        if _last_report(report):
            del self.pending[nodeid]
            self._record(reports)

    def pytest_keyboard_interrupt(self) -> None:
        self.interrupted = True

    @pytest.hookimpl(trylast=True)  # after xdist has stopped its workers
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        # Tests that never reached their teardown report: interrupted, or their worker crashed.
        for reports in list(self.pending.values()):
            self._record(reports, unfinished=True)
        self.pending.clear()
        root, self.root = self.root, None
        if root is not None:
            code = int(session.exitstatus)
            root.tag("exit_code", code)
            root.conclusion = exit_status_conclusion(code, interrupted=self.interrupted)
            close_event(root, None)
            # Deliver the last tests and the session now, while pytest prints its summary and
            # unwinds, rather than at interpreter exit when nothing else is left to overlap with.
            processor = _state.STATE.processor
            if processor is not None:
                processor.wake()

    def pytest_unconfigure(self) -> None:
        if self.root is not None:  # the session never finished (an internal error)
            root, self.root = self.root, None
            root.conclusion = Conclusion.CANCELLED if self.interrupted else Conclusion.FAILURE
            close_event(root, None)

    def _record(self, reports: List[Any], unfinished: bool = False) -> None:
        nodeid = reports[0].nodeid
        conclusion, tags = _conclusion(reports)
        if unfinished and conclusion is Conclusion.SUCCESS:
            conclusion = Conclusion.CANCELLED if self.interrupted else Conclusion.FAILURE
        ev = self.local.finish(nodeid) if self.local is not None else None
        if ev is not None:  # ran here: the live event has its own clock
            # Set directly, as ev.conclusion = ... and ev.tag() would after validating:
            # a Conclusion, and tags of ours (str and int values under str keys).
            ev._conclusion = conclusion
            if ev._tags is None:
                ev._tags = tags
            else:
                ev._tags.update(tags)
            end_event(ev, None)
            return
        event_id = getattr(reports[-1], _ID_ATTR, None)
        if event_id is None:
            return  # not started by a traced process (a worker without the plugin)
        worker = getattr(reports[-1], "worker_id", None)
        if worker:
            tags["xdist_worker"] = worker
        user_tags = getattr(reports[-1], _TAGS_ATTR, None)
        if user_tags:
            tags = {**user_tags, **tags}
        starts = [r.start for r in reports if getattr(r, "start", None)]
        stops = [r.stop for r in reports if getattr(r, "stop", None)]
        now = time.time()
        record_event(
            track(nodeid, kind="test"),
            start_epoch_ns=int((min(starts) if starts else now) * 1e9),
            end_epoch_ns=int((max(stops) if stops else now) * 1e9),
            conclusion=conclusion,
            parent=self.root,
            event_id=event_id,
            tags=tags,
            metrics=getattr(reports[-1], _METRICS_ATTR, None),
        )


def _last_report(report: pytest.TestReport) -> bool:
    """Whether *report* is a test's last: its teardown, unless a rerun follows."""
    return report.when == "teardown" and report.outcome != "rerun"


def _conclusion(reports: List[Any]) -> tuple[Conclusion, Dict[str, Any]]:
    """A test's conclusion and tags from its phase reports (setup, call, subtests, teardown)."""
    if len(reports) == 3:  # most tests: setup, call and teardown passed (a third of the general path's cost)
        setup, call, teardown = reports
        if (
            setup.outcome == "passed" and call.outcome == "passed" and teardown.outcome == "passed"
            and setup.when == "setup" and call.when == "call" and teardown.when == "teardown"
            and not hasattr(call, "wasxfail")
        ):
            return Conclusion.SUCCESS, {"outcome": "passed"}
    reruns = 0
    attempt = reports
    for index, report in enumerate(reports):
        if report.outcome == "rerun":
            reruns += 1
            attempt = reports[index + 1:]
    tags: Dict[str, Any] = {"reruns": reruns} if reruns else {}
    outcome = "passed"
    for report in attempt:
        subtest = hasattr(report, "context")  # pytest's SubtestReport (or pytest-subtests')
        if report.outcome == "failed":
            if report.when in ("setup", "teardown"):
                outcome = "error"
                tags["phase"] = report.when
            else:
                outcome = "failed"
            break
        if report.outcome == "skipped" and not subtest and outcome == "passed":
            outcome = "xfailed" if hasattr(report, "wasxfail") else "skipped"
        elif report.when == "call" and hasattr(report, "wasxfail") and outcome == "passed":
            outcome = "xpassed"
    tags["outcome"] = outcome
    if outcome in ("failed", "error"):
        return Conclusion.FAILURE, tags
    if outcome in ("skipped", "xfailed"):
        return Conclusion.SKIPPED, tags
    return Conclusion.SUCCESS, tags
