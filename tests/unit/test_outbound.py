"""`OutboundHttp` against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import socket
from collections.abc import Iterator, Sequence

import pytest

from mxpush.errors import TargetUnreachable, UnsafeTarget
from mxpush.outbound import MAX_RESPONSE_BYTES, OutboundHttp
from mxpush.urlsafety import TargetPolicy
from tests.fakes.server import Received, RecordingServer, Reply

LOCAL = TargetPolicy(allow_private=True)


class EchoServer(RecordingServer):
    def respond(self, request: Received) -> Reply:
        return Reply(200, {"path": request.path}, headers={"X-Answer": "yes"})


@pytest.fixture(scope="module")
def running_server() -> Iterator[EchoServer]:
    # One server per module: stopping one takes up to half a second (its poll interval).
    started = EchoServer()
    started.start()
    yield started
    started.stop()


@pytest.fixture
def server(running_server: EchoServer) -> EchoServer:
    running_server.reset()
    return running_server


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 that was just in use and now has no listener."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def resolver_for(table: dict[str, list[str]]) -> TargetPolicy:
    def resolve(host: str, port: int) -> Sequence[str]:
        return table[host]

    return TargetPolicy(allow_private=True, resolver=resolve)


def test_request_arrives_as_sent(server: EchoServer) -> None:
    http = OutboundHttp(LOCAL)

    response = http.request(
        "POST",
        f"{server.url}/api/push?x=1&y=two%20words",
        headers={"X-Custom": "value", "Content-Type": "application/json"},
        body=b'{"a": 1}',
    )

    assert len(server.requests) == 1
    received = server.requests[0]
    assert received.method == "POST"
    assert received.path == "/api/push"
    assert dict(received.query) == {"x": "1", "y": "two words"}
    assert received.body == b'{"a": 1}'
    assert received.headers["x-custom"] == "value"
    assert received.headers["content-type"] == "application/json"
    assert received.headers["user-agent"].startswith("mxpush/")
    assert received.headers["host"] == f"127.0.0.1:{server.port}"
    assert response.status == 200
    assert response.body == b'{"path": "/api/push"}'
    assert response.headers["x-answer"] == "yes"
    assert response.headers["content-type"] == "application/json"


def test_get_without_body(server: EchoServer) -> None:
    response = OutboundHttp(LOCAL).request("GET", f"{server.url}/x")

    assert response.status == 200
    assert server.requests[0].method == "GET"
    assert server.requests[0].body == b""


def test_caller_cannot_override_the_host_header(server: EchoServer) -> None:
    OutboundHttp(LOCAL).request("GET", f"{server.url}/", headers={"Host": "evil.example"})

    assert server.requests[0].headers["host"] == f"127.0.0.1:{server.port}"


def test_redirect_is_returned_not_followed(server: EchoServer) -> None:
    server.queue(Reply(302, None, headers={"Location": f"{server.url}/elsewhere"}))

    response = OutboundHttp(LOCAL).request("POST", f"{server.url}/message", body=b"{}")

    assert response.status == 302
    assert response.headers["location"] == f"{server.url}/elsewhere"
    assert [r.path for r in server.requests] == ["/message"]


def test_response_body_is_capped(server: EchoServer) -> None:
    assert MAX_RESPONSE_BYTES == 64 * 1024
    server.queue(Reply(200, b"x" * (100 * 1024)))
    http = OutboundHttp(LOCAL)

    response = http.request("GET", f"{server.url}/big")

    assert response.body == b"x" * (64 * 1024)
    # The client is still usable after a response it stopped reading.
    assert http.request("GET", f"{server.url}/after").body == b'{"path": "/after"}'


def test_body_of_exactly_the_cap_is_returned_whole(server: EchoServer) -> None:
    server.queue(Reply(200, b"y" * (64 * 1024)))

    response = OutboundHttp(LOCAL).request("GET", f"{server.url}/exact")

    assert response.body == b"y" * (64 * 1024)


def test_connection_refused_is_unreachable(closed_port: int) -> None:
    with pytest.raises(TargetUnreachable, match="cannot connect") as caught:
        OutboundHttp(LOCAL).request("GET", f"http://127.0.0.1:{closed_port}/?token=s3cret")

    assert "s3cret" not in str(caught.value)


def test_read_timeout_is_unreachable(server: EchoServer) -> None:
    server.queue(Reply(200, {}, delay=1.0))
    http = OutboundHttp(LOCAL, read_timeout=0.3)

    with pytest.raises(TargetUnreachable, match="timed out") as caught:
        http.request("POST", f"{server.url}/slow?token=s3cret", body=b"{}")

    assert "s3cret" not in str(caught.value)
    # The server records the request on its own thread: on a loaded machine, after the timeout.
    assert len(server.wait_for(1)) == 1


def test_connects_to_the_checked_address_with_the_name_in_host(server: EchoServer) -> None:
    http = OutboundHttp(resolver_for({"gotify.test": ["127.0.0.1"]}))

    response = http.request("POST", f"http://gotify.test:{server.port}/message", body=b"{}")

    assert response.status == 200
    assert server.requests[0].headers["host"] == f"gotify.test:{server.port}"


def test_tries_the_next_checked_address_when_one_refuses(server: EchoServer) -> None:
    # Nothing listens on 127.0.0.2 (the server is bound to 127.0.0.1 only).
    http = OutboundHttp(resolver_for({"gotify.test": ["127.0.0.2", "127.0.0.1"]}))

    response = http.request("GET", f"http://gotify.test:{server.port}/")

    assert response.status == 200
    assert len(server.requests) == 1


def test_policy_refuses_private_target_before_connecting(server: EchoServer) -> None:
    http = OutboundHttp(TargetPolicy(allow_private=False))

    with pytest.raises(UnsafeTarget):
        http.request("POST", f"{server.url}/message", body=b"{}")

    assert server.requests == []


def test_policy_refuses_a_name_resolving_to_private_before_connecting(
    server: EchoServer,
) -> None:
    def resolve(host: str, port: int) -> Sequence[str]:
        return ["127.0.0.1"]

    http = OutboundHttp(TargetPolicy(resolver=resolve))

    with pytest.raises(UnsafeTarget):
        http.request("GET", f"http://gotify.test:{server.port}/")

    assert server.requests == []


def test_bad_url_is_unsafe_and_nothing_is_sent(server: EchoServer) -> None:
    with pytest.raises(UnsafeTarget):
        OutboundHttp(LOCAL).request("GET", f"http://user:pw@127.0.0.1:{server.port}/")

    assert server.requests == []
