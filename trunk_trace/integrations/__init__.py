"""Integrations with task runners and test tools, each enabled in one line.

- :mod:`trunk_trace.integrations.invoke`: ``tasks: {executor_class: trunk_trace.integrations.invoke.TracedExecutor}``
  in ``invoke.yaml``, or ``@task(klass=TracedTask)`` per task.
- :mod:`trunk_trace.integrations.nox`: ``instrument()`` at the end of a noxfile, or ``@traced`` per session.
- :mod:`trunk_trace.integrations.pytest_plugin`: ``pytest --trunk-trace`` (registered through the
  ``pytest11`` entry point, inert unless enabled).

Each module imports its tool; importing this package (or ``trunk_trace``) imports none of them.
"""

from __future__ import annotations

from .._event import Conclusion


def exit_status_conclusion(code: int | None, *, interrupted: bool = False) -> Conclusion:
    """The conclusion of a whole run from the exit status its tool reports."""
    if interrupted:
        return Conclusion.CANCELLED
    return Conclusion.SUCCESS if not code else Conclusion.FAILURE
