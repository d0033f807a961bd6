"""`python -m mxpush_local.receiver` (`make receiver`): a stand-in push backend on 127.0.0.1,
to try local mode without a Gotify server or the internet (a public hostname cannot be
registered offline: every target URL is resolved at registration).

It answers `POST /message` as Gotify does (any token), any other POST with 200 as ntfy or a
webhook would, and prints each push: it plays the phone, so it shows the title and the text.
"""

from __future__ import annotations

import argparse
import itertools
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO

DEFAULT_PORT = 3001
# What to print of a body that is not a Gotify or ntfy JSON message.
PREVIEW_BYTES = 200


def describe(path: str, body: bytes) -> str:
    """One line for a received push: title and message when the body has them."""
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
        title = parsed.get("title") or ""
        return f"{path}: {title!r} {parsed['message']!r}"
    return f"{path}: {body[:PREVIEW_BYTES]!r}"


class Receiver:
    """Start with `start()`; `url` is where it listens. Each push is printed to `out`."""

    def __init__(self, port: int = DEFAULT_PORT, out: TextIO = sys.stdout) -> None:
        self.out = out
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _received(self, path: str, body: bytes) -> int:
        with self._lock:
            number = next(self._ids)
            print(f"push #{number} {describe(path, body)}", file=self.out, flush=True)
        return number

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                number = receiver._received(self.path, self.rfile.read(length))
                # Gotify answers the stored message; the others only need a 2xx.
                answer = json.dumps({"id": number}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # one line per push is printed instead

        return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mxpush_local.receiver",
        description="A stand-in push backend on 127.0.0.1 that prints what it receives.",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="default: %(default)s")
    args = parser.parse_args(argv)
    try:
        receiver = Receiver(args.port)
    except OSError as exc:
        print(f"receiver: cannot listen on 127.0.0.1:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(
        f"stand-in backend listening on {receiver.url}; register it as "
        f'"backend": "gotify", "target": {{"url": "{receiver.url}", "token": "any-token"}}',
        flush=True,
    )
    stop = threading.Event()
    # Ctrl-C sets the event rather than interrupting shutdown half way.
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    receiver.start()
    stop.wait()
    receiver.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
