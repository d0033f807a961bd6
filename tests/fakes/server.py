"""A recording HTTP server on 127.0.0.1 with an ephemeral port."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    # Seconds to wait before answering (timeouts).
    delay: float = 0.0
    # Close the connection without answering (a server that crashed mid-request).
    drop: bool = False

    def encoded(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body).encode()


class _QuietHttpServer(ThreadingHTTPServer):
    """A client that hangs up mid-response (as the outbound client does past its size cap) is
    what some tests provoke: not worth a traceback on stderr. Other errors still print one."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class RecordingServer:
    """Subclasses implement `respond(request) -> Reply`. Every request is recorded, also the
    ones answered with an error; `queue` makes the next requests answer what a test wants."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.queued: list[Reply] = []
        # Set: answers go out; cleared by `hold`, requests are recorded and their answers wait.
        self._answering = threading.Event()
        self._answering.set()
        self._lock = threading.Condition()
        self._server = _QuietHttpServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._answering.set()
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        """Forget what was received and queued: a module-scoped server, fresh for each test.
        Subclasses clear what else they record."""
        with self._lock:
            self.requests.clear()
            self.queued.clear()
        self._answering.set()

    def hold(self) -> None:
        """Record requests but answer none until `release`: a push in flight, for as long as a
        test needs."""
        self._answering.clear()

    def release(self) -> None:
        self._answering.set()

    def queue(self, *replies: Reply) -> None:
        with self._lock:
            self.queued.extend(replies)

    def respond(self, request: Received) -> Reply:
        raise NotImplementedError

    def wait_for(
        self, count: int, timeout: float = 10.0, predicate: Callable[[Received], bool] | None = None
    ) -> list[Received]:
        """Wait until `count` matching requests arrived; return them."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                matching = [r for r in self.requests if predicate is None or predicate(r)]
                if len(matching) >= count:
                    return matching
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"expected {count} requests within {timeout}s, got {len(matching)}"
                    )
                self._lock.wait(remaining)

    def _record(self, request: Received) -> Reply:
        with self._lock:
            self.requests.append(request)
            reply = self.queued.pop(0) if self.queued else None
            self._lock.notify_all()
        return reply if reply is not None else self.respond(request)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                request = Received(
                    method=self.command,
                    path=parts.path,
                    query={k: v[-1] for k, v in parse_qs(parts.query).items()},
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                reply = server._record(request)
                server._answering.wait(timeout=60)
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.drop:
                    self.close_connection = True
                    return
                payload = reply.encoded()
                try:
                    self.send_response(reply.status)
                    headers = {"Content-Type": "application/json", **reply.headers}
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            do_GET = do_POST = do_PUT = do_DELETE = _handle  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler
