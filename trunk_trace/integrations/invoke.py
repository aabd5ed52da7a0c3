"""invoke: one event per invocation, per task run and per command.

Enable it for every task with one line of ``invoke.yaml`` (next to ``tasks.py``)::

    tasks: {executor_class: trunk_trace.integrations.invoke.TracedExecutor}

(or ``invoke -f trace.yaml``, or ``Program(..., executor_class=TracedExecutor)``).
Or opt single tasks in, without the executor::

    from invoke import task
    from trunk_trace.integrations.invoke import TracedTask

    @task(klass=TracedTask)
    def build(c):
        c.run("make")

Events: the invocation is a root of kind ``pipeline`` named ``invoke`` (the
task list in the tag ``tasks``); each task run (pre and post tasks included,
after invoke's dedupe) is kind ``task``, named as invoked (``docs.build``);
each ``c.run``/``c.sudo`` inside a task is kind ``command``, named by its
command line, with the tag ``exit_code``. A non-zero exit is ``FAILURE`` on
the command (with ``warn=True`` too, though the task goes on and succeeds);
a timeout is ``TIMED_OUT`` on the command and on what it ends. The command's
process joins the chain under its event.

Commands are recorded through the configured runner classes (``runners.*``,
subclassed, so a custom or Fabric runner keeps working), and only inside an
open trunk_trace block: a task run outside any traced task runs untouched.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Tuple, Union

from invoke import Context, Executor, Task
from invoke.exceptions import CommandTimedOut, Exit, Failure
from invoke.parser import ParserContext
from invoke.runners import Promise, Result, Runner
from invoke.tasks import Call

from .._command import command_name
from .._context import _CURRENT
from .._event import Conclusion, Event, conclude
from .._track import end_event, start_event, track

__all__ = ["TracedExecutor", "TracedTask"]


# --- tasks ---


def _conclusion_of(exc: BaseException) -> Conclusion:
    """How a task or invocation ended by *exc*: a command's timeout times out what it ends."""
    if isinstance(exc, CommandTimedOut):
        return Conclusion.TIMED_OUT
    if isinstance(exc, Exit):
        return Conclusion.SUCCESS if exc.code == 0 else Conclusion.FAILURE
    return conclude(exc)


class TracedTask(Task):
    """A task recorded as an event of kind ``task``, with its commands: ``@task(klass=TracedTask)``."""

    # Set on the copies TracedExecutor makes: the name the task was invoked by.
    _trunk_trace_name: Optional[str] = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if args and isinstance(args[0], Context):
            trace_commands(args[0].config)
        with track(self._trunk_trace_name or self.name, kind="task") as ev:
            try:
                return super().__call__(*args, **kwargs)
            except BaseException as exc:
                ev.conclusion = _conclusion_of(exc)
                raise


_traced_task_classes: Dict[type, type] = {TracedTask: TracedTask}


def _traced_task_class(cls: type) -> type:
    """``cls`` with TracedTask's ``__call__`` in front (a user's ``klass=`` keeps its behaviour)."""
    traced = _traced_task_classes.get(cls)
    if traced is None:
        traced = _traced_task_classes[cls] = type(f"Traced{cls.__name__}", (TracedTask, cls), {})
    return traced


# --- commands ---


def trace_commands(config: Any) -> None:
    """Make every runner class in ``config.runners`` record commands (once; idempotent).

    The assignment lands in the config's modifications layer, which survives
    the per-task reloads of collection configuration.
    """
    runners = config.runners
    for key in list(runners):
        cls = runners[key]
        if isinstance(cls, type) and issubclass(cls, Runner) and not issubclass(cls, _CommandEvents):
            runners[key] = _traced_runner_class(cls)


_traced_runner_classes: Dict[type, type] = {}


def _traced_runner_class(cls: type) -> type:
    traced = _traced_runner_classes.get(cls)
    if traced is None:
        traced = _traced_runner_classes[cls] = type(f"Traced{cls.__name__}", (_CommandEvents, cls), {})
    return traced


class _CommandEvents(Runner):
    """Mixed in front of a runner class: each ``run`` inside a traced block is a ``command`` event."""

    _trunk_trace_event: Optional[Event] = None

    def run(self, command: str, **kwargs: Any) -> Result:
        if _CURRENT.get() is None:
            return super().run(command, **kwargs)
        ev = start_event(track(self._trunk_trace_command_name(command), kind="command"))
        if ev is None:
            return super().run(command, **kwargs)
        self._trunk_trace_event = ev
        # Current while the runner starts the process, so the child joins under this command.
        token = _CURRENT.set(ev)
        try:
            result = super().run(command, **kwargs)
        except BaseException as exc:
            self._trunk_trace_finish(exc=exc)
            raise
        finally:
            _CURRENT.reset(token)
        if not isinstance(result, Promise):  # asynchronous=True: the event ends at join()
            self._trunk_trace_finish(result=result)
        return result

    def make_promise(self) -> Promise:
        return _TracedPromise(self)

    def _trunk_trace_command_name(self, command: str) -> str:
        # c.sudo hands the runner "sudo -S -p '<prompt>' <command>": name it "sudo <command>".
        try:
            prefix = f"sudo -S -p '{self.context.config.sudo.prompt}' "
        except Exception:
            prefix = None
        if prefix and command.startswith(prefix):
            command = "sudo " + command[len(prefix):]
        return command_name(command)

    def _trunk_trace_finish(self, result: Optional[Result] = None, exc: Optional[BaseException] = None) -> None:
        ev, self._trunk_trace_event = self._trunk_trace_event, None
        if ev is None:
            return
        if isinstance(exc, Failure):  # UnexpectedExit, CommandTimedOut, a watcher's failure
            result = exc.result
            ev.conclusion = Conclusion.TIMED_OUT if isinstance(exc, CommandTimedOut) else Conclusion.FAILURE
        if result is not None and result.exited is not None:  # None: disowned
            ev.tag("exit_code", result.exited)
            if result.exited != 0 and exc is None:  # warn=True: the task goes on, the command failed
                ev.conclusion = Conclusion.FAILURE
        end_event(ev, exc)


class _TracedPromise(Promise):
    def join(self) -> Result:
        runner: Any = self.runner
        try:
            result = super().join()
        except BaseException as exc:
            runner._trunk_trace_finish(exc=exc)
            raise
        runner._trunk_trace_finish(result=result)
        return result


# --- the executor ---


TaskSpec = Union[str, Tuple[str, Dict[str, Any]], ParserContext]


class TracedExecutor(Executor):
    """An invoke executor that records the invocation, each task run and each command.

    Enable with ``tasks: {executor_class: trunk_trace.integrations.invoke.TracedExecutor}``
    in ``invoke.yaml``. Everything else (pre/post tasks, dedupe, autoprint,
    results, exit codes) is invoke's own behaviour, unchanged.
    """

    def execute(self, *tasks: TaskSpec) -> Dict[Task, Any]:
        names = [_requested_name(spec) for spec in tasks]
        if not names and self.collection.default is not None:
            names = [self.collection.default]
        with track("invoke", kind="pipeline", tags={"tasks": " ".join(names)}) as ev:
            try:
                return super().execute(*tasks)
            except BaseException as exc:
                ev.conclusion = _conclusion_of(exc)
                raise

    def expand_calls(self, calls: List[Call]) -> List[Call]:
        # Each call gets a traced copy of its task: equal to the original (same
        # name and body), so dedupe, autoprint and the results dict are unchanged.
        return [self._traced_call(call) for call in super().expand_calls(calls)]

    def _traced_call(self, call: Call) -> Call:
        task = call.task
        if task.__dict__.get("_trunk_trace_name"):  # traced already (expand_calls recurses)
            return call
        traced = copy.copy(task)
        traced.__class__ = _traced_task_class(type(task))
        traced._trunk_trace_name = call.called_as or self._task_name(task)  # type: ignore[attr-defined]
        return call.clone(with_={"task": traced})

    def _task_name(self, task: Task) -> str:
        # Pre and post tasks come without the name they were invoked by: find their full name.
        names = getattr(self, "_trunk_trace_task_names", None)
        if names is None:
            names = {}
            for name in self.collection.task_names:
                names.setdefault(self.collection[name], name)
            self._trunk_trace_task_names = names
        return names.get(task) or task.name


def _requested_name(spec: TaskSpec) -> str:
    if isinstance(spec, str):
        return spec
    if isinstance(spec, ParserContext):
        return str(spec.name)
    return str(spec[0])
