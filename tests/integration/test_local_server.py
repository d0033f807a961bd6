"""Local mode's HTTP server over real sockets: framing (chunked bodies, bad Content-Length), the
answers the server makes by itself (always JSON with `errcode`), a burst of concurrent notifies,
and `--host`/`--port`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from mxpush_local.gateway import LocalGateway, LocalSettings, is_loopback
from mxpush_local.http_server import MAX_BODY_BYTES, HttpServer
from tests.conftest import ADMIN_TOKEN, synapse_body
from tests.integration.test_local_mode import call, free_port, running

ROOT = Path(__file__).resolve().parents[2]
NOTIFY = "/_matrix/push/v1/notify"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Connection:
    """One raw TCP connection: bytes out exactly as given, answers parsed by Content-Length (so a
    server that hangs fails the test by timeout instead of blocking it)."""

    def __init__(self, gateway: LocalGateway, timeout: float = 10) -> None:
        port = urlsplit(gateway.url).port
        assert port is not None
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self._buffer = b""

    def send(self, data: bytes) -> Connection:
        self.sock.sendall(data)
        return self

    def answer(self, *, head: bool = False) -> Answer:
        while b"\r\n\r\n" not in self._buffer:
            self._receive()
        header_block, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = header_block.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = 0 if head else int(headers.get("content-length", "0"))
        while len(self._buffer) < length:
            self._receive()
        body, self._buffer = self._buffer[:length], self._buffer[length:]
        return Answer(int(status_line.split(" ")[1]), headers, body)

    def closed_by_server(self) -> bool:
        """True once the server has closed its side (nothing more than what was read came)."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True  # it closed with our unread bytes still in its buffer

    def close(self) -> None:
        self.sock.close()

    def _receive(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed mid-answer; got {self._buffer!r}")
        self._buffer += chunk


def exchange(gateway: LocalGateway, data: bytes) -> tuple[Answer, Connection]:
    connection = Connection(gateway).send(data)
    return connection.answer(), connection


def assert_json_error(answer: Answer, status: int, errcode: str) -> dict[str, Any]:
    assert answer.status == status, answer
    assert answer.headers["content-type"] == "application/json"
    body: dict[str, Any] = answer.json()
    assert body["errcode"] == errcode
    assert isinstance(body["error"], str) and body["error"]
    return body


def chunked(data: bytes, size: int) -> bytes:
    parts = [data[i : i + size] for i in range(0, len(data), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts) + b"0\r\n\r\n"


def test_a_chunked_notify_is_decoded_and_the_connection_stays_in_step(
    gateway: LocalGateway,
) -> None:
    pushkey = "mxp_unknown_chunked"
    body = json.dumps(synapse_body("message_dm_2_members.1.full", pushkey)).encode()
    connection = Connection(gateway)
    try:
        connection.send(
            f"POST {NOTIFY} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
            + chunked(body, 100)
            # The next request on the same connection: answered as itself, not as chunk bytes.
            + f"GET /api/v1/pushkeys HTTP/1.1\r\nHost: gw\r\n"
            f"Authorization: Bearer {ADMIN_TOKEN}\r\n\r\n".encode()
        )
        first = connection.answer()
        assert (first.status, first.json()) == (200, {"rejected": [pushkey]})
        second = connection.answer()
        assert second.status == 200
        assert "pushkeys" in second.json()
    finally:
        connection.close()


@pytest.mark.parametrize(
    "content_length",
    [b"abc", b"-5", b"-1", b"5, 6", b"0x10", b"5\r\nContent-Length: 6"],
    ids=["letters", "negative", "minus-one", "list", "hex", "two-conflicting"],
)
def test_a_bad_content_length_is_400_json_and_the_connection_closes(
    gateway: LocalGateway, content_length: bytes
) -> None:
    answer, connection = exchange(
        gateway,
        b"POST "
        + NOTIFY.encode()
        + b" HTTP/1.1\r\nHost: gw\r\nContent-Length: "
        + content_length
        + b"\r\n\r\nhello",
    )
    try:
        body = assert_json_error(answer, 400, "M_UNRECOGNIZED")
        assert "Content-Length" in body["error"]
        assert answer.headers["connection"] == "close"
        assert connection.closed_by_server()
    finally:
        connection.close()


def test_a_declared_body_over_api_gateways_limit_is_413_json_without_sending_it(
    gateway: LocalGateway,
) -> None:
    answer, connection = exchange(
        gateway,
        f"POST {NOTIFY} HTTP/1.1\r\nHost: gw\r\n"
        f"Content-Length: {MAX_BODY_BYTES + 1}\r\n\r\n".encode(),
    )
    connection.close()
    assert_json_error(answer, 413, "M_TOO_LARGE")


def test_a_chunked_body_over_the_limit_is_413_json(gateway: LocalGateway) -> None:
    connection = Connection(gateway)
    try:
        head = f"POST {NOTIFY} HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"
        chunk = b"%x\r\n%s\r\n" % (1024 * 1024, b"x" * 1024 * 1024)
        connection.send(head.encode())
        for _ in range(11):
            try:
                connection.send(chunk)
            except OSError:
                break  # the server stopped reading once over the limit: its answer waits
        assert_json_error(connection.answer(), 413, "M_TOO_LARGE")
    finally:
        connection.close()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: gw\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: gw\r\nX-Padding: " + b"b" * 70_000 + b"\r\n\r\n",
    ],
    ids=["70KB-path", "70KB-header"],
)
def test_a_huge_request_line_or_header_is_431_json(
    gateway: LocalGateway, request_bytes: bytes
) -> None:
    answer, connection = exchange(gateway, request_bytes)
    connection.close()
    assert_json_error(answer, 431, "M_TOO_LARGE")


@pytest.mark.parametrize("method", ["TRACE", "CONNECT", "PROPFIND", "FOO"])
def test_an_unsupported_method_is_405_json(gateway: LocalGateway, method: str) -> None:
    target = "gw:443" if method == "CONNECT" else "/api/v1/pushkeys"
    answer, connection = exchange(
        gateway, f"{method} {target} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n".encode()
    )
    connection.close()
    assert_json_error(answer, 405, "M_UNRECOGNIZED")
    assert "GET" in answer.headers["allow"]


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"get / HTTP/1.1\r\nHost: gw\r\n\r\n", 400),  # methods are case-sensitive
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),  # TLS to a plain port
        (b"GET / HTTP/1.1\r\nHost gw\r\n\r\n", 400),  # no colon
        (b"POST / HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    ],
    ids=["lowercase-method", "tls-hello", "header-without-colon", "bad-chunk-size", "gzip"],
)
def test_a_malformed_request_is_json_not_waitress_text(
    gateway: LocalGateway, request_bytes: bytes, status: int
) -> None:
    answer, connection = exchange(gateway, request_bytes)
    try:
        assert_json_error(answer, status, "M_UNRECOGNIZED")
        assert connection.closed_by_server()
    finally:
        connection.close()


def test_the_error_never_echoes_the_request(gateway: LocalGateway) -> None:
    # waitress's own message quotes the offending header line, token included.
    answer, connection = exchange(
        gateway, b"GET / HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer sekrit\rx\r\n\r\n"
    )
    connection.close()
    assert_json_error(answer, 400, "M_UNRECOGNIZED")
    assert b"sekrit" not in answer.body


def test_head_sends_the_length_without_the_body(gateway: LocalGateway) -> None:
    connection = Connection(gateway)
    try:
        connection.send(b"HEAD /no/such/route HTTP/1.1\r\nHost: gw\r\n\r\n")
        head = connection.answer(head=True)
        assert head.status == 404
        assert int(head.headers["content-length"]) > 0
        # Had a body been sent, it would be read here as the next answer's status line.
        connection.send(b"GET /no/such/route HTTP/1.1\r\nHost: gw\r\n\r\n")
        get = connection.answer()
        assert get.status == 404
        assert len(get.body) == int(head.headers["content-length"])
    finally:
        connection.close()


def test_200_concurrent_notifies_are_all_answered(gateway: LocalGateway) -> None:
    count = 200
    port = urlsplit(gateway.url).port
    start = threading.Barrier(count)
    results: list[Any] = [None] * count

    def notify(i: int) -> None:
        pushkey = f"mxp_unknown_burst_{i}"
        body = json.dumps(synapse_body("message_dm_2_members.1.full", pushkey)).encode()
        request = (
            f"POST {NOTIFY} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        try:
            start.wait(timeout=30)
            with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
                sock.sendall(request)
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
            head, _, payload = data.partition(b"\r\n\r\n")
            results[i] = (int(head.split(b" ")[1]), json.loads(payload))
        except Exception as exc:
            results[i] = repr(exc)

    threads = [threading.Thread(target=notify, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    failures = [r for r in results if not isinstance(r, tuple) or r[0] != 200]
    assert failures == [], f"{len(failures)} of {count} failed, e.g. {failures[:3]}"
    assert [r[1] for r in results] == [
        {"rejected": [f"mxp_unknown_burst_{i}"]} for i in range(count)
    ]


def test_settings_read_host_and_public_url_from_the_environment() -> None:
    assert LocalSettings.from_env({}).host == "127.0.0.1"
    settings = LocalSettings.from_env(
        {"MXPUSH_HOST": " 0.0.0.0 ", "MXPUSH_PUBLIC_URL": "https://push.example.org"}
    )
    expected = ("0.0.0.0", "https://push.example.org")  # noqa: S104 - compared, not bound
    assert (settings.host, settings.public_url) == expected


@pytest.mark.slow
def test_host_and_port_options_access_lines_and_ctrl_c() -> None:
    # 127.0.0.2 is loopback too (the tests reach only 127.0.0.0/8), yet not the default.
    port = free_port()
    env = {"PYTHONPATH": f"{ROOT / 'layers' / 'mxpush'}:{ROOT / 'local'}", "PORT": "1"}
    command = [sys.executable, "-m", "mxpush_local", "--host", "127.0.0.2", "--port", str(port)]
    with running(command, env) as process:
        process.wait_for_line(rf"listening on http://127\.0\.0\.2:{port} ")
        assert "WARNING" not in process.output
        base = f"http://127.0.0.2:{port}"
        with urllib.request.urlopen(f"{base}/api/v1/webpush/vapid-public-key", timeout=30) as r:
            assert r.status == 200
        status, _ = call("GET", f"{base}/api/v1/pushkeys/mxp_secretish/deliveries")
        assert status == 401
        with socket.create_connection(("127.0.0.2", port), timeout=10) as sock:
            sock.sendall(b"TRACE /mxp_secretish HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
            while sock.recv(65536):
                pass
        with socket.create_connection(("127.0.0.2", port), timeout=10) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n")
            while sock.recv(65536):
                pass
        process.wait_for_line(r"^GET /api/v1/webpush/vapid-public-key 200 \d+\.\dms$")
        process.wait_for_line(r"^GET /api/v1/pushkeys/\{pushkey\}/deliveries 401 ")
        process.wait_for_line(r"^- \(unsupported method\) 405 ")
        process.wait_for_line(r"^- \(malformed request\) 400 ")
        os.killpg(process.popen.pid, signal.SIGINT)
        assert process.popen.wait(timeout=15) == 0
        process.wait_for_line("mxpush: stopping", timeout=1)
        assert "Traceback" not in process.output
        assert "mxp_secretish" not in process.output


def test_the_warning_names_addresses_beyond_loopback() -> None:
    assert is_loopback("127.0.0.1")
    assert is_loopback("127.0.0.2")
    assert is_loopback("::1")
    assert not is_loopback("0.0.0.0")  # noqa: S104 - nothing binds here
    assert not is_loopback("::")
    assert not is_loopback("192.168.1.20")


def test_stop_closes_every_connection_and_frees_the_port() -> None:
    def handle(
        method: str, raw_url: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        return 200, {"Content-Type": "text/plain"}, f"{method} {raw_url} {len(body)}".encode()

    server = HttpServer(handle, host="127.0.0.1", port=0)
    assert server.port != 0
    assert server.url == f"http://127.0.0.1:{server.port}"
    server.start()
    idle = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        with urllib.request.urlopen(server.url + "/a?b=c", data=b"xyz", timeout=10) as response:
            assert response.read() == b"POST /a?b=c 3"
        server.stop()
        assert idle.recv(1) == b""  # the idle keep-alive connection was closed too
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.port), timeout=10)
    finally:
        idle.close()


def test_a_port_out_of_range_is_refused_not_wrapped_around() -> None:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'layers' / 'mxpush'}:{ROOT / 'local'}"}
    done = subprocess.run(
        [sys.executable, "-m", "mxpush_local", "--port", "99999"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "cannot listen on 127.0.0.1:99999" in done.stderr
    assert "Traceback" not in done.stderr
    assert "listening on" not in done.stdout


def test_handle_is_looked_up_per_request(
    gateway: LocalGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    # tests/e2e records every notify by wrapping `handle` on the running gateway.
    seen: list[tuple[str, str]] = []
    original = gateway.handle

    def recording(
        method: str, raw_url: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        seen.append((method, raw_url))
        return original(method, raw_url, headers, body)

    monkeypatch.setattr(gateway, "handle", recording)
    answer, connection = exchange(gateway, b"GET /x?y=1 HTTP/1.1\r\nConnection: close\r\n\r\n")
    connection.close()
    assert answer.status == 404
    assert seen == [("GET", "/x?y=1")]
