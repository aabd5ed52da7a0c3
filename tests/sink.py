"""A real HTTP server on 127.0.0.1 standing in for the Trunk API, with fault injection.

::

    with Sink() as sink:
        sink.push(Reply(503), Reply(503))      # the next two requests fail, then 200 again
        ... send to sink.url ...
        assert len(sink.events()) == 10

Actions, used in order for the next requests (then ``sink.default``):

* ``Reply(status, body=..., headers=...)``: answer (``Retry-After`` goes in *headers*);
* ``RESET``: read the request, then reset the connection (RST, no answer);
* ``HANG``: read the request and never answer (until the sink stops).

``sink.accepted`` holds the requests answered 2xx, ``sink.attempts`` every request
read. The sink stops by itself after *lifetime* seconds, so a forgotten one
never holds a test run. :func:`closed_port` gives a port nothing listens on.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple, Optional


class Reply(NamedTuple):
    status: int = 200
    body: bytes = b'{"ok":true}'
    headers: tuple = ()


RESET = "reset"
HANG = "hang"


class Request(NamedTuple):
    path: str
    headers: dict
    body: Any  # parsed JSON, or the raw bytes when not JSON
    raw: bytes


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    sink: Sink


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real API
    disable_nagle_algorithm = True  # else headers and body written apart stall 40 ms on delayed ACKs
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.server.sink._connections.add(self.connection)

    def finish(self) -> None:
        self.server.sink._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def do_POST(self) -> None:
        sink = self.server.sink
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw
        request = Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body, raw)
        action = sink._next(request)
        if action == RESET:
            # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return
        if action == HANG:
            sink._stopping.wait(sink.lifetime)
            self.close_connection = True
            return
        status, payload, headers = action
        if 200 <= status < 300:
            sink._accept(request)
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class Sink:
    def __init__(self, lifetime: float = 60.0) -> None:
        self.lifetime = lifetime
        self.default: Any = Reply()
        self.attempts: list[Request] = []
        self.accepted: list[Request] = []
        self._script: deque = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server: Optional[_Server] = None
        self._timer: Optional[threading.Timer] = None

    # -- lifecycle --

    def start(self) -> Sink:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.sink = self
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="sink", daemon=True).start()
        self._timer = threading.Timer(self.lifetime, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        server, self._server = self._server, None
        if server is None:
            return
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.cancel()
        server.shutdown()
        server.server_close()
        for connection in list(self._connections):
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> Sink:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "the sink is not running"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- fault injection --

    def push(self, *actions: Any) -> None:
        """Use *actions* for the next requests, in order, before the default."""
        with self._lock:
            self._script.extend(actions)

    def _next(self, request: Request) -> Any:
        with self._lock:
            self.attempts.append(request)
            return self._script.popleft() if self._script else self.default

    def _accept(self, request: Request) -> None:
        with self._lock:
            self.accepted.append(request)

    # -- what arrived --

    def events(self) -> list[dict]:
        """Every event of the requests answered 2xx, in arrival order."""
        with self._lock:
            return [event for request in self.accepted for event in request.body["events"]]

    def ids(self) -> list[str]:
        return [event["id"] for event in self.events()]

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until *count* events were accepted (a bound, not a timing assertion)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if len(self.events()) >= count:
                return True
            time.sleep(0.01)
        return len(self.events()) >= count


def closed_port() -> int:
    """A loopback port nothing listens on: connecting is refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- running instrumented scripts as processes --

TOKEN = "tt-secret-token-4f9c1e"  # tests grep logs and spool files for it
REPO_URL = "https://github.com/acme/widgets.git"


def script_env(api_address: str, spool_dir: str, **extra: str) -> dict:
    """An explicit environment for a child Python: only what it needs, our settings included."""
    import os

    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "SYSTEMROOT") if name in os.environ}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root
    env.update(
        TRUNK_API_TOKEN=TOKEN,
        TRUNK_PUBLIC_API_ADDRESS=api_address,
        TRUNK_REPO_URL=REPO_URL,
        TRUNK_TRACE_SPOOL_DIR=spool_dir,
    )
    env.update(extra)
    return env


class Finished(NamedTuple):
    returncode: int
    stdout: str
    stderr: str
    seconds: float  # from start to the process's end


def run_python(args: list, env: dict, timeout: float = 30.0, **kwargs: Any) -> Finished:
    import subprocess
    import sys

    start = time.monotonic()
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=timeout, **kwargs)
    return Finished(done.returncode, done.stdout, done.stderr, time.monotonic() - start)


def spooled_ids(spool_dir: str, area: str = "pending") -> list:
    import os

    ids = []
    directory = os.path.join(spool_dir, area)
    if not os.path.isdir(directory):
        return ids
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), encoding="utf-8") as file:
            ids.extend(json.loads(line)["event"]["id"] for line in file if line.strip())
    return ids
