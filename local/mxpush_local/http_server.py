"""Local mode's HTTP front: waitress (HTTP/1.1 framing with chunked bodies, a thread pool, a deep
listen backlog) turning each request into one `handle(method, raw_url, headers, body)` call.

Every answer the server makes by itself is Matrix-style JSON `{"errcode", "error"}`, and after
a framing error the connection is closed (what follows on it cannot be trusted):
- 400 `M_UNRECOGNIZED`: malformed request line or headers, a Content-Length that is not one
  plain number (abc, -5, -1, two values), a bad chunk. Not `M_BAD_JSON`: no JSON was read.
- 405 `M_UNRECOGNIZED` (with `Allow`): a method no route takes (TRACE, CONNECT, ...), as the
  handlers answer a wrong method.
- 413 `M_TOO_LARGE`: a body over API Gateway's 10 MiB; 431 `M_TOO_LARGE`: request line and
  headers over 16 KiB.
- 501 `M_UNRECOGNIZED`: a transfer coding other than chunked.
A handler that raises is answered as API Gateway answers a failed Lambda function:
500 `{"message": "Internal Server Error"}`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any, cast

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask, ThreadedTaskDispatcher

Handle = Callable[[str, str, Mapping[str, str], bytes], tuple[int, dict[str, str], bytes]]
# (method, raw URL or None when the request could not be parsed, status, milliseconds)
AccessLog = Callable[[str, str | None, int, float], None]

# What the template's routes can be called with; anything else is answered 405 here.
METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})
# API Gateway's payload limit (notify has its own 512 KiB limit, answered by its handler).
MAX_BODY_BYTES = 10 * 1024 * 1024
# API Gateway allows 10 KiB of request line and header values; waitress counts names and
# separators too, so a little more room.
MAX_HEADER_BYTES = 16 * 1024
# Handlers run in this process and mostly hold the GIL (moto), so more threads add no throughput;
# 32 keeps notifies flowing while some handlers wait on the network (a homeserver's whoami).
THREADS = 32
# Connections waiting to be accepted: a burst of hundreds of notifies queues instead of being
# reset (http.server's 5 reset most of 200). The kernel caps it at net.core.somaxconn.
BACKLOG = 1024
# Connections open at once; more wait in the backlog. Well under the usual 1024 open files.
CONNECTION_LIMIT = 512
SERVER_NAME = "mxpush-local"

log = logging.getLogger("mxpush_local")

# waitress's own messages that quote nothing from the request (others echo a header line).
_SAFE_DETAILS = frozenset(
    {
        "Content-Length is invalid",
        "Chunk not properly terminated",
        "Invalid chunk extension",
        "Invalid chunk size",
        "Start line is invalid",
        "HTTP message header invalid",
        "Bare CR or LF found in HTTP message",
        "Invalid header",
        "Bad URI",
        "Transfer-Encoding requested is not supported.",
    }
)


def json_error(errcode: str, error: str) -> bytes:
    return json.dumps({"errcode": errcode, "error": error}).encode()


def describe_error(code: int, detail: str) -> tuple[str, str]:
    """errcode and message for a status waitress decided on by itself."""
    if code == 413:
        return "M_TOO_LARGE", f"request body over {MAX_BODY_BYTES} bytes"
    if code == 431:
        return "M_TOO_LARGE", f"request line and headers over {MAX_HEADER_BYTES} bytes"
    if code == 501:
        return "M_UNRECOGNIZED", "only the chunked transfer coding is supported"
    if code == 400:
        shown = detail if detail in _SAFE_DETAILS else "malformed request line or headers"
        return "M_UNRECOGNIZED", f"bad HTTP request: {shown}"
    return "M_UNKNOWN", "internal server error"


class WsgiApp:
    """The WSGI side: one request in, one `handle()` call, one access line out."""

    def __init__(self, handle: Handle, access_log: AccessLog | None) -> None:
        self._handle = handle
        self._access_log = access_log

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        started = time.perf_counter()
        method = str(environ["REQUEST_METHOD"])
        raw_url = str(environ.get("REQUEST_URI") or environ.get("PATH_INFO") or "/")
        if method not in METHODS:
            status, headers, payload = (
                405,
                {"Content-Type": "application/json", "Allow": ", ".join(sorted(METHODS))},
                json_error("M_UNRECOGNIZED", "unsupported HTTP method"),
            )
        else:
            status, headers, payload = self._answer(method, raw_url, environ)
        response_headers = [
            (name, value)
            for name, value in headers.items()
            if name.lower() != "content-length" and not _hop_by_hop(name)
        ]
        response_headers.append(("Content-Length", str(len(payload))))
        start_response(f"{status} {_reason(status)}", response_headers)
        if self._access_log is not None:
            elapsed = (time.perf_counter() - started) * 1000
            self._access_log(method if method in METHODS else "-", raw_url, status, elapsed)
        # HEAD: the length of what GET would send, without it.
        return [] if method == "HEAD" else [payload]

    def _answer(
        self, method: str, raw_url: str, environ: dict[str, Any]
    ) -> tuple[int, dict[str, str], bytes]:
        # waitress has read the whole body (and decoded a chunked one) and set its length.
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        try:
            return self._handle(method, raw_url, request_headers(environ), body)
        except Exception:
            # What API Gateway answers when the Lambda function fails.
            log.exception("handler failed")
            return (
                500,
                {"Content-Type": "application/json"},
                b'{"message":"Internal Server Error"}',
            )


def request_headers(environ: Mapping[str, Any]) -> dict[str, str]:
    """The request's headers from a WSGI environ (lower-case names, as API Gateway gives them;
    repeated headers joined with ", ")."""
    headers = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers[key[5:].replace("_", "-").lower()] = str(value)
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            headers[key.replace("_", "-").lower()] = str(value)
    return headers


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _hop_by_hop(name: str) -> bool:
    # waitress sets these itself and refuses an application that sets them.
    return name.lower() in (
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
    )


class _JsonErrorTask(ErrorTask):
    """waitress's answer to a request it could not take (plain text by default), as JSON."""

    def execute(self) -> None:
        error = cast(Any, self.request).error
        errcode, message = describe_error(int(error.code), str(error.body))
        body = json_error(errcode, message)
        self.status = f"{error.code} {error.reason}"
        cast(list[tuple[str, str]], self.response_headers).append(
            ("Content-Type", "application/json")
        )
        # The framing can no longer be trusted: what follows on this connection is not read.
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)
        server = self.channel.server
        if isinstance(server, _Server) and server.access_log is not None:
            server.access_log("-", None, int(error.code), 0.0)


class _JsonErrorChannel(HTTPChannel):
    error_task_class = _JsonErrorTask


class _Server(TcpWSGIServer):
    channel_class = _JsonErrorChannel
    access_log: AccessLog | None = None


class HttpServer:
    """Binds in the constructor (so `port` is known at once, also for port 0); `start()` serves
    from a background thread, `stop()` closes every connection and waits for the workers."""

    def __init__(
        self, handle: Handle, *, host: str, port: int, access_log: AccessLog | None = None
    ) -> None:
        if not 0 <= port <= 65535:
            # The OS would silently take the port modulo 65536.
            raise ValueError(f"port {port} is not between 0 and 65535")
        adjustments = Adjustments(
            host=host,
            port=port,
            ident=SERVER_NAME,
            threads=THREADS,
            backlog=BACKLOG,
            connection_limit=CONNECTION_LIMIT,
            # select() cannot watch descriptors above 1023; poll() can.
            asyncore_use_poll=True,
            # Bodies of exactly 10 MiB pass, as on API Gateway (waitress refuses >= its limit).
            max_request_body_size=MAX_BODY_BYTES + 1,
            max_request_header_size=MAX_HEADER_BYTES,
            # Pass X-Forwarded-* through to the handlers as before; nothing here trusts them.
            clear_untrusted_proxy_headers=False,
            # A client hanging up mid-answer is not worth a traceback in the operator's terminal.
            log_socket_errors=False,
        )
        # A burst of notifies queues tasks for a moment; waitress would warn at each one.
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        self._map: dict[int, Any] = {}
        self._dispatcher = ThreadedTaskDispatcher()
        try:
            self._server = _Server(
                WsgiApp(handle, access_log),
                map=self._map,
                adj=adjustments,
                dispatcher=self._dispatcher,
            )
        except OSError:
            wasyncore.close_all(self._map)
            raise
        self._server.access_log = access_log
        self._dispatcher.set_thread_count(THREADS)
        self._thread: threading.Thread | None = None
        self._stopped = False
        bound = cast(Any, self._server)  # the stubs lack these two
        self.host = str(bound.effective_host)
        self.port = int(bound.effective_port)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.run, name="mxpush-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        # Worker threads first: one finishing a request wakes the loop through its trigger pipe,
        # which must still be open then (closing it first gave EBADF now and then).
        self._dispatcher.shutdown(timeout=5)
        # The loop owns the sockets: close them from its thread; it returns once none is left.
        trigger = cast(Any, self._server).trigger
        trigger.pull_trigger(lambda: wasyncore.close_all(self._map))
        if self._thread is not None:
            self._thread.join(timeout=10)
        else:
            wasyncore.close_all(self._map)
