"""The invoke integration, through real ``python -m invoke`` processes in temporary projects."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import by_key, tags_of, traced_env

from trunk_trace.exporters.jsonl import load_events

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EXECUTOR_YAML = "tasks: {executor_class: trunk_trace.integrations.invoke.TracedExecutor}\n"

TASKS = '''
import json, os, sys
from invoke import task
from trunk_trace.integrations.invoke import TracedTask

# The child writes the context it inherited, to compare with the command's event.
SHOW_CONTEXT = f'"{sys.executable}" show_context.py'

@task
def setup(c):
    c.run("echo setup")

@task(pre=[setup])
def build(c):
    c.run(SHOW_CONTEXT)
    c.run("exit 3", warn=True)

@task(pre=[setup])
def test(c):
    c.run("exit 2")

@task
def slow(c):
    c.run("sleep 5", timeout=0.5)

@task(klass=TracedTask)
def opted(c):
    c.run("echo opted")

@task
def plain(c):
    c.run("echo plain")
'''


def invoke(project: Path, *args: str, traced: bool = True) -> tuple[subprocess.CompletedProcess, list[dict]]:
    (project / "invoke.yaml").unlink(missing_ok=True)
    if traced:
        (project / "invoke.yaml").write_text(EXECUTOR_YAML)
    events_file = project / "events.jsonl"
    events_file.unlink(missing_ok=True)
    result = subprocess.run(
        [sys.executable, "-m", "invoke", *args], cwd=project, env=traced_env(events_file),
        capture_output=True, text=True, timeout=60,
    )
    events = load_events(str(events_file)) if events_file.exists() else []
    return result, events


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "tasks.py").write_text(textwrap.dedent(TASKS))
    (tmp_path / "show_context.py").write_text(
        "import json, os\n"
        "names = ('TRUNK_TRACE_CHAIN_ID', 'TRUNK_TRACE_PARENT_ID')\n"
        "open('context.json', 'w').write(json.dumps({k: os.environ.get(k) for k in names}))\n"
    )
    return tmp_path



def test_tasks_commands_and_exit_code(project: Path) -> None:
    untraced, _ = invoke(project, "build", "test", traced=False)
    result, events = invoke(project, "build", "test")
    assert result.returncode == untraced.returncode == 2
    assert result.stdout == untraced.stdout

    events = by_key(events)
    context_key = next(k for k in events if "show_context" in k)
    assert context_key.startswith("invoke/build/")
    assert set(events) - {context_key} == {
        "invoke", "invoke/setup", "invoke/setup/echo setup", "invoke/build",
        "invoke/build/exit 3", "invoke/test", "invoke/test/exit 2",
    }
    root = events["invoke"]
    assert root["sequence"]["kind"] == "pipeline" and "parent" not in root
    assert tags_of(root)["tasks"] == "build test" and root["conclusion"] == "FAILURE"
    assert len({e["chainId"] for e in events.values()}) == 1 and root["chainId"] == root["id"]

    # setup is a pre-task of both: run (and recorded) once, as invoke dedupes it
    for name in ("setup", "build", "test"):
        task = events[f"invoke/{name}"]
        assert task["sequence"]["kind"] == "task" and task["parent"]["eventId"] == root["id"]
    assert events["invoke/setup"]["conclusion"] == "SUCCESS"
    # warn=True: the command failed, the task did not
    warned = events["invoke/build/exit 3"]
    assert (warned["conclusion"], tags_of(warned)["exit_code"]) == ("FAILURE", 3)
    assert events["invoke/build"]["conclusion"] == "SUCCESS"
    failed = events["invoke/test/exit 2"]
    assert (failed["conclusion"], tags_of(failed)["exit_code"], failed["sequence"]["kind"]) == ("FAILURE", 2, "command")
    assert failed["parent"]["eventId"] == events["invoke/test"]["id"]
    assert events["invoke/test"]["conclusion"] == "FAILURE"
    assert tags_of(events["invoke/setup/echo setup"])["exit_code"] == 0


def test_the_commands_process_joins_under_its_command(project: Path) -> None:
    _, events = invoke(project, "build")
    command = next(e for e in events if "show_context" in e["sequence"]["name"])
    context = json.loads((project / "context.json").read_text())
    assert context == {"TRUNK_TRACE_CHAIN_ID": command["chainId"], "TRUNK_TRACE_PARENT_ID": command["id"]}


def test_a_timeout_times_out_the_command_and_its_task(project: Path) -> None:
    untraced, _ = invoke(project, "slow", traced=False)
    result, events = invoke(project, "slow")
    assert result.returncode == untraced.returncode != 0
    events = by_key(events)
    assert events["invoke/slow/sleep 5"]["conclusion"] == "TIMED_OUT"
    assert events["invoke/slow"]["conclusion"] == "TIMED_OUT"


def test_no_dedupe_records_each_run(project: Path) -> None:
    result, events = invoke(project, "--no-dedupe", "build", "test")
    assert result.returncode == 2
    assert [e["sequence"]["key"] for e in events].count("invoke/setup") == 2


def test_runtime_config_file_enables_it(project: Path) -> None:
    (project / "trace.yaml").write_text(EXECUTOR_YAML)
    events_file = project / "events.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "-f", "trace.yaml", "opted", "plain"], cwd=project,
        env=traced_env(events_file), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    keys = {e["sequence"]["key"] for e in load_events(str(events_file))}
    # A klass=TracedTask task under the executor is recorded once, not twice.
    assert keys == {"invoke", "invoke/opted", "invoke/opted/echo opted", "invoke/plain", "invoke/plain/echo plain"}


def test_traced_task_class_without_the_executor(project: Path) -> None:
    result, events = invoke(project, "opted", "plain", traced=False)
    assert result.returncode == 0, result.stderr
    assert [(e["sequence"]["key"], e["sequence"]["kind"]) for e in events] == [
        ("opted/echo opted", "command"), ("opted", "task"),
    ]


def test_namespaced_tasks_are_named_as_invoked(tmp_path: Path) -> None:
    (tmp_path / "docs.py").write_text("from invoke import task\n@task\ndef setup(c):\n    c.run('echo s')\n@task(pre=[setup])\ndef build(c):\n    pass\n")
    (tmp_path / "tasks.py").write_text("from invoke import Collection\nimport docs\nns = Collection(docs)\n")
    result, events = invoke(tmp_path, "docs.build")
    assert result.returncode == 0, result.stderr
    assert [e["sequence"]["key"] for e in events] == ["invoke/docs.setup/echo s", "invoke/docs.setup", "invoke/docs.build", "invoke"]


def test_example_tasks(tmp_path: Path) -> None:
    events_file = tmp_path / "events.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "-r", str(EXAMPLES), "build"], cwd=tmp_path,
        env=traced_env(events_file), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    events = load_events(str(events_file))
    assert len({e["chainId"] for e in events}) == 1
    keys = {e["sequence"]["key"]: e for e in events}
    assert {"invoke", "invoke/setup", "invoke/compile", "invoke/test", "invoke/build", "invoke/build/package"} <= set(keys)
    unit = next(e for e in events if e["sequence"]["name"] == "unit tests")  # from the command's own process
    assert keys[unit["parent"]["sequenceKey"]]["sequence"]["kind"] == "command"
    warned = next(e for k, e in keys.items() if k.startswith("invoke/test/") and "exit(1)" in k)
    assert warned["conclusion"] == "FAILURE" and keys["invoke/test"]["conclusion"] == "SUCCESS"
