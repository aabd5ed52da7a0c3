"""The ``trunk-trace`` command: one function per subcommand, dispatched by :func:`main`.

Subcommands return the process's exit status; :func:`main` never raises for
a user error (it prints one line and returns non-zero).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any, Callable, Optional, Sequence

DEFAULT_FLUSH_TIMEOUT = 60.0


def cmd_flush(args: argparse.Namespace) -> int:
    """Send the events waiting in the spool (Trunk's, and OTLP's when configured); exit 1 when some remain."""
    config = _config_with_spool_dir(args.spool_dir)
    otlp = config.otlp_endpoint is not None and config.otlp_enabled
    if not config.token and not otlp:
        print("trunk-trace flush: TRUNK_API_TOKEN is not set (nor an OTLP endpoint); nothing sent", file=sys.stderr)
        return 2
    deadline = math.inf if args.timeout is None else time.monotonic() + args.timeout
    status = _flush_trunk(config, deadline) if config.token else 0
    if otlp:
        status = max(status, _flush_otlp(config, deadline))
    return status


def _flush_trunk(config: Any, deadline: float) -> int:
    from .exporters.http import Client
    from .exporters.spool import Spool

    spool = Spool.from_config(config)
    fallback_repo = None
    if config.repo_url:
        from ._ci import parse_remote

        parsed = parse_remote(config.repo_url)
        fallback_repo = parsed.to_wire() if parsed is not None else None
    client = Client(config.token, config.api_address, connections=1)
    if not client.token_ok:
        print("trunk-trace flush: TRUNK_API_TOKEN holds characters not allowed in an HTTP header", file=sys.stderr)
        return 2
    status = _replay(client, spool, deadline, "event(s)", fallback_repo=fallback_repo)
    if status and fallback_repo is None and any(n.endswith(".norepo.jsonl") for n in spool.pending(include_no_repo=True)):
        print("trunk-trace flush: some events have no repository: set TRUNK_REPO_URL and run again")
    return status


def _flush_otlp(config: Any, deadline: float) -> int:
    from .exporters.otlp import OtlpBatch, make_client, otlp_spool

    client = make_client(
        config.otlp_endpoint, config.otlp_headers, gzip=config.otlp_compression == "gzip",
        timeout=config.otlp_timeout, connections=1,
    )
    return _replay(client, otlp_spool(config), deadline, "span(s)", batch_type=OtlpBatch)


def _replay(client: Any, spool: Any, deadline: float, what: str, **options: Any) -> int:
    """Send every pending file of *spool* through *client*; print what happened; 1 when some remain."""
    from .exporters.http import replay_claim

    spool.recover()
    sent = 0
    rejected = 0
    failure = None
    for name in spool.pending(include_no_repo=True):
        if time.monotonic() >= deadline:
            break
        claim = spool.claim(name)
        if claim is None:
            continue  # another process is sending it
        result = replay_claim(client, spool, claim, deadline=deadline, **options)
        sent += result.sent
        rejected += len(result.rejected)
        if result.last is not None:
            failure = result.last
            break  # the endpoint is down or refuses us: the rest stays for next time
    client.close()
    remaining = spool.stats("pending")
    print(f"trunk-trace flush: sent {sent} {what} to {client.url}")
    if rejected:
        print(f"trunk-trace flush: {rejected} {what} rejected by the server, kept in {spool.rejected_dir}")
    if failure is not None:
        print(f"trunk-trace flush: stopped: {failure.detail}")
    if remaining.events:
        print(f"trunk-trace flush: {remaining.events} {what} remain in {spool.directory}")
        return 1
    print(f"trunk-trace flush: nothing remains in {spool.directory}")
    return 0


def _add_flush(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "flush",
        help="send the events waiting in the spool",
        description="Send the events that earlier runs could not deliver (kept in the spool). "
        "Reads TRUNK_API_TOKEN, TRUNK_PUBLIC_API_ADDRESS, TRUNK_REPO_URL and TRUNK_TRACE_SPOOL_DIR; "
        "with an OTLP endpoint set (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, "
        "OTEL_EXPORTER_OTLP_HEADERS), also sends the spans in the spool's otlp/ directory. "
        "Exits 1 when events remain.",
    )
    parser.add_argument("--spool-dir", help="the spool directory (default: TRUNK_TRACE_SPOOL_DIR, else the per-user cache)")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_FLUSH_TIMEOUT,
        help=f"give up after this many seconds (default {DEFAULT_FLUSH_TIMEOUT:g})",
    )
    parser.set_defaults(handler=cmd_flush)


# --- run: a command as an event ---

FORWARDED_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")


def cmd_run(args: argparse.Namespace) -> int:
    """Run a command as a tracked event in the inherited chain; exit with its status."""
    import signal
    import subprocess

    command = list(args.cmd)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        return _usage("run", "no command given: trunk-trace run [OPTIONS] -- CMD [ARGS...]")
    tags = _parse_tags("run", args.tag)
    if tags is None:
        return 2
    import trunk_trace
    from ._command import command_name
    from ._event import Conclusion

    # The wrapped command prints its own summary if it is instrumented; this
    # process's would be a one-line echo of it.
    _configure_quietly(summary=_env_summary())
    child: subprocess.Popen | None = None
    received: list[int] = []

    def forward(signum: int, frame: object) -> None:
        received.append(signum)
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    # Our own handlers first: the library then leaves SIGTERM to us, and the
    # child decides how to end (as a shell would let it).
    for name in FORWARDED_SIGNALS:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), forward)
    with trunk_trace.track(args.name or command_name(command), kind=args.kind, tags=tags) as ev:
        try:
            child = subprocess.Popen(command)
        except OSError as exc:
            ev.tag("exit_code", 127)
            ev.conclusion = Conclusion.FAILURE
            print(f"trunk-trace run: cannot run {command[0]!r}: {exc.strerror or exc}", file=sys.stderr)
            return 127 if isinstance(exc, FileNotFoundError) else 126
        returncode = child.wait()  # our handlers forward signals meanwhile; the wait resumes (PEP 475)
        status = returncode if returncode >= 0 else 128 - returncode
        ev.tag("exit_code", status)
        if returncode != 0:
            interrupted = -returncode in (signal.SIGINT, signal.SIGTERM) or (received and status in (130, 143))
            ev.conclusion = Conclusion.CANCELLED if interrupted else Conclusion.FAILURE
    return status


def _add_run(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run a command as a tracked event",
        description="Run CMD as an event (kind 'command' unless --kind) in the chain inherited from "
        "the environment (see 'trunk-trace begin'), pass the chain on to it, forward signals to it, "
        "and exit with its status.",
        usage="trunk-trace run [--name NAME] [--kind KIND] [--tag K=V]... -- CMD [ARGS...]",
    )
    parser.add_argument("--name", help="the event's name (default: the command line)")
    parser.add_argument("--kind", default="command", help="the sequence kind (default: command)")
    parser.add_argument("--tag", action="append", default=[], metavar="K=V", help="add a tag (repeatable)")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="the command and its arguments, after --")
    parser.set_defaults(handler=cmd_run)


# --- begin / end: one CI job, many processes, one chain ---

JOB_VARIABLES = ("TRUNK_TRACE_JOB_NAME", "TRUNK_TRACE_JOB_KEY", "TRUNK_TRACE_JOB_KIND", "TRUNK_TRACE_JOB_START")
GITHUB_STATUS = {"success": "SUCCESS", "failure": "FAILURE", "cancelled": "CANCELLED", "skipped": "SKIPPED"}


def cmd_begin(args: argparse.Namespace) -> int:
    """Start a job: print the variables that make later processes join it."""
    import os
    import shlex
    import time

    from ._context import format_id, new_id
    from ._event import check_name, shorten_key
    from ._propagate import context_env, inherit_trace

    try:
        name = check_name(args.name or _ci_job_name() or "job", "--name")
        kind = check_name(args.kind, "--kind")
        key = shorten_key(check_name(args.key or name, "--key"))
    except (TypeError, ValueError) as exc:
        return _usage("begin", str(exc))
    job_id = format_id(new_id())
    variables = {
        "TRUNK_TRACE_JOB_NAME": name,
        "TRUNK_TRACE_JOB_KEY": key,
        "TRUNK_TRACE_JOB_KIND": kind,
        "TRUNK_TRACE_JOB_START": str(time.time_ns() // 1_000_000),
    }
    from ._event import RemoteParent

    inherit_trace(os.environ)  # a TRACEPARENT from the CI system stays the trace of every later process
    variables.update(context_env(RemoteParent(job_id, key, job_id)))
    for variable, value in variables.items():
        print(f"export {variable}={shlex.quote(value)}")
    github_env = os.environ.get("GITHUB_ENV")
    if github_env:
        try:
            with open(github_env, "a", encoding="utf-8") as file:
                file.writelines(f"{variable}={value}\n" for variable, value in variables.items())
        except OSError as exc:
            print(f"trunk-trace begin: cannot append to GITHUB_ENV ({exc}); use eval \"$(trunk-trace begin)\"", file=sys.stderr)
    return 0


def _ci_job_name() -> str | None:
    import os

    from ._ci import detect

    return detect(os.environ, use_git=False).job


def _add_begin(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "begin",
        help="start a job that later processes join",
        description="Print 'export NAME=value' lines for eval \"$(trunk-trace begin)\" (on GitHub Actions "
        "they are also appended to $GITHUB_ENV). Every process started with them nests its root blocks "
        "under the job; 'trunk-trace end' records the job event itself.",
    )
    parser.add_argument("--name", help="the job's name (default: the CI job's name, else 'job')")
    parser.add_argument("--key", help="the job's sequence key (default: its name)")
    parser.add_argument("--kind", default="job", help="the sequence kind (default: job)")
    parser.set_defaults(handler=cmd_begin)


def cmd_end(args: argparse.Namespace) -> int:
    """Record the job event started by 'begin', with its conclusion, and deliver it."""
    import os
    import time

    conclusion = _parse_conclusion(args.conclusion)
    if conclusion is None:
        return _usage("end", f"--conclusion must be one of SUCCESS, FAILURE, CANCELLED, TIMED_OUT, SKIPPED (or a GitHub job status), got {args.conclusion!r}")
    from ._propagate import ENV_CHAIN_ID, ENV_PARENT_ID, parent_from_env

    job = parent_from_env(os.environ)
    start = os.environ.get("TRUNK_TRACE_JOB_START", "")
    if job is None or job.id != job.chain_id or not start.isdigit():
        return _usage("end", f"no job to end: run eval \"$(trunk-trace begin)\" first ({ENV_CHAIN_ID}, {ENV_PARENT_ID} and TRUNK_TRACE_JOB_START are needed)")
    import trunk_trace
    from ._track import record_event, track

    _configure_quietly(summary=_env_summary())
    name = os.environ.get("TRUNK_TRACE_JOB_NAME") or job.key
    block = track(name, kind=os.environ.get("TRUNK_TRACE_JOB_KIND") or "job", key=job.key)
    record_event(
        block, root=True, event_id=job.id, conclusion=conclusion,
        start_epoch_ns=int(start) * 1_000_000, end_epoch_ns=time.time_ns(),
    )
    trunk_trace.shutdown(_exit_timeout())
    return 0


def _parse_conclusion(text: str) -> str | None:
    word = text.strip()
    upper = word.upper().replace("-", "_")
    if upper in ("SUCCESS", "FAILURE", "CANCELLED", "TIMED_OUT", "SKIPPED"):
        return upper
    return GITHUB_STATUS.get(word.lower())


def _add_end(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "end",
        help="record the job started by 'begin'",
        description="Record the job event (a root, started at 'begin') with its conclusion and deliver it. "
        "Exits 0 once the event is recorded, whatever its conclusion.",
    )
    parser.add_argument("--conclusion", default="SUCCESS", help="SUCCESS (default), FAILURE, CANCELLED, TIMED_OUT, SKIPPED, or a GitHub job status (success, failure, cancelled)")
    parser.set_defaults(handler=cmd_end)


# --- show: the summary of a JSON Lines file ---


def cmd_show(args: argparse.Namespace) -> int:
    from .exporters.console import Summary, wants_colour
    from .exporters.jsonl import read_lines

    if args.format == "chrome":
        return _show_chrome(args.file)
    summary = Summary()
    try:
        for item in read_lines(args.file):
            summary.add_wire(item["event"])
    except OSError as exc:
        return _usage("show", f"cannot read {args.file}: {exc.strerror or exc}", status=1)
    except (KeyError, TypeError) as exc:
        return _usage("show", f"{args.file} holds an event without {exc}", status=1)
    if not summary.events:
        print(f"trunk-trace show: no events in {args.file}", file=sys.stderr)
        return 1
    encoding = (getattr(sys.stdout, "encoding", None) or "ascii").lower()
    sys.stdout.write(summary.render(colour=wants_colour(sys.stdout), unicode=encoding.startswith("utf")))
    return 0


def _add_show(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "show",
        help="print the timing summary of a JSON Lines file",
        description="Print the timing summary (waterfall) of the events in FILE (written with TRUNK_TRACE_FILE).",
    )
    parser.add_argument("file", metavar="FILE.jsonl")
    parser.add_argument(
        "--format", choices=("summary", "chrome"), default="summary",
        help="summary (default): the waterfall; chrome: a trace file for ui.perfetto.dev and chrome://tracing "
        "(trunk-trace show FILE.jsonl --format chrome > trace.json)",
    )
    parser.set_defaults(handler=cmd_show)


def _show_chrome(path: str) -> int:
    from .exporters.chrome import dumps, from_lines
    from .exporters.jsonl import read_lines

    try:
        events = from_lines(read_lines(path))
    except OSError as exc:
        return _usage("show", f"cannot read {path}: {exc.strerror or exc}", status=1)
    except (KeyError, TypeError) as exc:
        return _usage("show", f"{path} holds an event without {exc}", status=1)
    if not events:
        print(f"trunk-trace show: no events in {path}", file=sys.stderr)
        return 1
    sys.stdout.write(dumps(events))
    return 0


# --- upload: send a JSON Lines file's events ---


def cmd_upload(args: argparse.Namespace) -> int:
    """Put a file's events in the spool, then flush: one delivery path, and nothing lost on failure."""
    from .exporters.jsonl import read_lines
    from .exporters.spool import Spool, encode_event, encode_repo, spool_line

    config = _config_with_spool_dir(args.spool_dir)
    if not config.token:
        return _usage("upload", "TRUNK_API_TOKEN is not set; nothing sent")
    known: list[str] = []
    unknown: list[str] = []
    try:
        for item in read_lines(args.file):
            repo = item.get("repo") if isinstance(item.get("repo"), dict) else None
            line = spool_line(encode_repo(repo), item.get("pid", 0), item.get("thread", 0), encode_event(item["event"]))
            (known if repo is not None else unknown).append(line)
    except OSError as exc:
        return _usage("upload", f"cannot read {args.file}: {exc.strerror or exc}", status=1)
    if not known and not unknown:
        return _usage("upload", f"no events in {args.file}", status=1)
    spool = Spool.from_config(config)
    for lines, repo_known in ((known, True), (unknown, False)):
        if lines and spool.write(lines, repo_known=repo_known) is None:
            return _usage("upload", f"cannot write to the spool {spool.directory}; nothing sent", status=1)
    print(f"trunk-trace upload: {len(known) + len(unknown)} event(s) from {args.file} queued in {spool.directory}")
    return cmd_flush(args)


def _add_upload(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "upload",
        help="send the events of a JSON Lines file",
        description="Send the events of FILE (written with TRUNK_TRACE_FILE) to Trunk. They go through the "
        "spool: what cannot be sent now stays there for 'trunk-trace flush'. Events keep their ids, so "
        "uploading a file twice stores each event once. Exits 1 when events remain unsent.",
    )
    parser.add_argument("file", metavar="FILE.jsonl")
    parser.add_argument("--spool-dir", help="the spool directory (default: TRUNK_TRACE_SPOOL_DIR, else the per-user cache)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_FLUSH_TIMEOUT, help=f"give up after this many seconds (default {DEFAULT_FLUSH_TIMEOUT:g})")
    parser.set_defaults(handler=cmd_upload)


# --- doctor: what the library sees ---


def cmd_doctor(args: argparse.Namespace) -> int:
    import os

    from ._ci import detect, parse_remote
    from ._config import Config
    from ._propagate import parent_from_env, traceparent_from_env

    config = Config.from_env()
    context = detect(os.environ)
    repo = context.repo
    repo_source = context.repo_source
    rows: list[tuple[str, str]] = [
        ("trunk_trace", _version()),
        ("python", sys.version.split()[0]),
        ("enabled", "yes" if config.enabled else "no (TRUNK_TRACE_DISABLED)"),
        ("token", f"set ({len(config.token)} characters)" if config.token else "not set: events are not sent (set TRUNK_API_TOKEN)"),
        ("api address", f"{config.api_address}/v1/metrics/trackEvents"),
        ("exit budget", f"{config.exit_timeout:g} s"),
        ("summary", "on" if config.summary_enabled else "off"),
        ("events file", config.file or "none (set TRUNK_TRACE_FILE)"),
        ("trace file", config.chrome or "none (set TRUNK_TRACE_CHROME)"),
        ("otlp", (config.otlp_endpoint + f" ({len(config.otlp_headers)} header(s), values hidden)"
                           + ("" if config.otlp_enabled else "; off: OTEL_SDK_DISABLED")) if config.otlp_endpoint
         else "none (set OTEL_EXPORTER_OTLP_ENDPOINT)"),
        ("platform", config.platform or context.platform),
    ]
    if config.repo_url:
        parsed = parse_remote(config.repo_url)
        repo, repo_source = (parsed, "TRUNK_REPO_URL") if parsed else (repo, repo_source)
    rows.append(("repository", f"{repo} (from {repo_source})" if repo else "unknown: set TRUNK_REPO_URL (events cannot be sent without it)"))
    if repo is not None and repo.host != "github.com":
        rows.append(("", f"note: the Trunk API documents only github.com repositories; {repo.host} may be rejected"))
    for label, value in (("branch", context.branch), ("commit", context.sha), ("pull request", context.pr),
                         ("run id", context.run_id), ("run attempt", context.run_attempt), ("job", context.job),
                         ("runner", context.runner), ("run url", context.url)):
        if value:
            rows.append((label, value))
    inherited = parent_from_env(os.environ)
    if inherited is not None:
        rows.append(("inherited chain", f"{inherited.chain_id} (parent {inherited.id}, key {inherited.key})"))
    if traceparent_from_env(os.environ):
        rows.append(("TRACEPARENT", "inherited (our spans nest in the caller's trace)"))
    rows.extend(_spool_rows(config))
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    return 0


def _spool_rows(config: object) -> list[tuple[str, str]]:
    try:
        from .exporters.spool import Spool

        spool = Spool.from_config(config)
        pending, rejected = spool.stats("pending"), spool.stats("rejected")
    except Exception as exc:  # doctor reports, never fails
        return [("spool", f"cannot be read: {exc}")]
    rows = [("spool", spool.directory),
            ("  pending", f"{pending.events} event(s) in {pending.files} file(s), {pending.bytes} bytes" + (" (run 'trunk-trace flush')" if pending.events else ""))]
    if rejected.files:
        rows.append(("  rejected", f"{rejected.events} event(s) in {rejected.files} file(s) in {spool.rejected_dir}"))
    return rows


def _add_doctor(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="show the configuration, CI, repository and spool trunk_trace sees",
        description="Print the resolved configuration (the token redacted), the detected CI, repository, "
        "branch and commit, and the spool's contents: what to run when events do not show up.",
    )
    parser.set_defaults(handler=cmd_doctor)


# --- helpers shared by the subcommands ---


def _usage(command: str, message: str, status: int = 2) -> int:
    print(f"trunk-trace {command}: {message}", file=sys.stderr)
    return status


def _parse_tags(command: str, items: Sequence[str]) -> dict | None:
    from ._event import check_tag

    tags = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            _usage(command, f"--tag wants K=V, got {item!r}")
            return None
        try:
            key, checked = check_tag(key, value, "--tag")
        except (TypeError, ValueError) as exc:
            _usage(command, str(exc))
            return None
        tags[key] = checked
    return tags


def _env_summary() -> bool:
    """The summary only when TRUNK_TRACE_SUMMARY asks for it (these commands record one event)."""
    import os

    from ._state import env_flag

    return env_flag(os.environ.get("TRUNK_TRACE_SUMMARY")) is True


def _configure_quietly(**settings: object) -> None:
    import trunk_trace

    trunk_trace.configure(**settings)


def _config_with_spool_dir(spool_dir: str | None) -> Any:
    """The environment's configuration, with ``--spool-dir`` when given."""
    import attrs

    from ._config import Config

    config = Config.from_env()
    return attrs.evolve(config, spool_dir=spool_dir) if spool_dir else config


def _exit_timeout() -> float:
    from ._config import get_config

    return get_config().exit_timeout


def _version() -> str:
    from ._version import __version__

    return __version__


# Each subcommand adds its parser here.
SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_run, _add_begin, _add_end, _add_flush, _add_upload, _add_show, _add_doctor,
]


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__

    parser = argparse.ArgumentParser(prog="trunk-trace", description="Time CI and build steps and report them to Trunk.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
