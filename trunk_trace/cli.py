"""The ``trunk-trace`` command: one function per subcommand, dispatched by :func:`main`.

Subcommands return the process's exit status; :func:`main` never raises for
a user error (it prints one line and returns non-zero).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Callable, Optional, Sequence

DEFAULT_FLUSH_TIMEOUT = 60.0


def cmd_flush(args: argparse.Namespace) -> int:
    """Send the events waiting in the spool; exit 1 when some remain."""
    import attrs

    from ._config import Config
    from .exporters.http import Client, replay_claim
    from .exporters.spool import Spool

    config = Config.from_env()
    if args.spool_dir:
        config = attrs.evolve(config, spool_dir=args.spool_dir)
    spool = Spool(config.spool_dir, int(config.spool_max_mb * 1024 * 1024))
    if not config.token:
        print("trunk-trace flush: TRUNK_API_TOKEN is not set; nothing sent", file=sys.stderr)
        return 2
    fallback_repo = None
    if config.repo_url:
        from ._ci import parse_remote

        parsed = parse_remote(config.repo_url)
        fallback_repo = parsed.to_wire() if parsed is not None else None
    client = Client(config.token, config.api_address, connections=1)
    if not client.token_ok:
        print("trunk-trace flush: TRUNK_API_TOKEN holds characters not allowed in an HTTP header", file=sys.stderr)
        return 2
    deadline = math.inf if args.timeout is None else time.monotonic() + args.timeout
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
        result = replay_claim(client, spool, claim, fallback_repo=fallback_repo, deadline=deadline)
        sent += result.sent
        rejected += len(result.rejected)
        if result.last is not None:
            failure = result.last
            break  # the endpoint is down or refuses us: the rest stays for next time
    client.close()
    remaining = spool.stats("pending")
    print(f"trunk-trace flush: sent {sent} event(s) to {client.url}")
    if rejected:
        print(f"trunk-trace flush: {rejected} event(s) rejected by the server, kept in {spool.rejected_dir}")
    if failure is not None:
        print(f"trunk-trace flush: stopped: {failure.detail}")
    if remaining.events:
        print(f"trunk-trace flush: {remaining.events} event(s) remain in {spool.directory}")
        if fallback_repo is None and any(n.endswith(".norepo.jsonl") for n in spool.pending(include_no_repo=True)):
            print("trunk-trace flush: some events have no repository: set TRUNK_REPO_URL and run again")
        return 1
    print(f"trunk-trace flush: nothing remains in {spool.directory}")
    return 0


def _add_flush(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "flush",
        help="send the events waiting in the spool",
        description="Send the events that earlier runs could not deliver (kept in the spool). "
        "Reads TRUNK_API_TOKEN, TRUNK_PUBLIC_API_ADDRESS, TRUNK_REPO_URL and TRUNK_TRACE_SPOOL_DIR. "
        "Exits 1 when events remain.",
    )
    parser.add_argument("--spool-dir", help="the spool directory (default: TRUNK_TRACE_SPOOL_DIR, else the per-user cache)")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_FLUSH_TIMEOUT,
        help=f"give up after this many seconds (default {DEFAULT_FLUSH_TIMEOUT:g})",
    )
    parser.set_defaults(handler=cmd_flush)


# Each subcommand adds its parser here.
SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_flush]


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
