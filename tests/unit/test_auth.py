"""`Authenticator` + `MatrixClient` against a real fake homeserver on 127.0.0.1."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from mxpush.auth import Authenticator, bearer_token
from mxpush.errors import (
    Forbidden,
    InvalidParam,
    MissingParam,
    MissingToken,
    UnknownToken,
    UpstreamFailed,
)
from mxpush.homeserver import MatrixClient
from mxpush.model import OPERATOR_OWNER
from mxpush.outbound import OutboundHttp
from mxpush.urlsafety import TargetPolicy
from tests.fakes.homeserver import FakeHomeserver
from tests.fakes.server import Reply

OPERATOR_TOKEN = "operator-token-123"
OTHER_HOMESERVER = "https://matrix.other.example"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def running_homeserver() -> Iterator[FakeHomeserver]:
    # One server per module: stopping one takes up to half a second (its poll interval).
    server = FakeHomeserver()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def homeserver(running_homeserver: FakeHomeserver) -> FakeHomeserver:
    running_homeserver.reset()
    return running_homeserver


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def matrix(clock: Clock) -> MatrixClient:
    return MatrixClient(OutboundHttp(TargetPolicy(allow_private=True)), clock=clock)


def authenticator(
    matrix: MatrixClient, *homeservers: str, admin_token: str | None = OPERATOR_TOKEN
) -> Authenticator:
    return Authenticator(admin_token=admin_token, allowed_homeservers=homeservers, matrix=matrix)


@pytest.fixture
def auth(matrix: MatrixClient, homeserver: FakeHomeserver) -> Authenticator:
    return authenticator(matrix, homeserver.url)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Basic x",
        "bob-token",
        "Token bob-token",
    ],
)
def test_missing_or_malformed_header_is_missing_token(
    auth: Authenticator, homeserver: FakeHomeserver, header: str | None
) -> None:
    with pytest.raises(MissingToken) as caught:
        auth.authenticate(header, None)

    assert caught.value.status == 401
    assert caught.value.errcode == "M_MISSING_TOKEN"
    assert homeserver.requests == []


@pytest.mark.parametrize(
    "header", ["bearer bob-token", "BEARER   bob-token  ", " Bearer bob-token"]
)
def test_bearer_scheme_is_case_insensitive_and_space_tolerant(header: str) -> None:
    assert bearer_token(header) == "bob-token"


def test_operator_token_makes_an_operator_without_asking_the_homeserver(
    auth: Authenticator, homeserver: FakeHomeserver
) -> None:
    caller = auth.authenticate(f"Bearer {OPERATOR_TOKEN}", None)

    assert caller.operator
    assert caller.owner == OPERATOR_OWNER
    assert caller.user_id is None
    assert caller.may_see("@anyone:example.org")
    assert homeserver.requests == []


def test_operator_token_works_without_any_allowed_homeserver(matrix: MatrixClient) -> None:
    assert authenticator(matrix).authenticate(f"Bearer {OPERATOR_TOKEN}", None).operator


def test_prefix_of_the_operator_token_is_not_the_operator(
    auth: Authenticator, homeserver: FakeHomeserver
) -> None:
    with pytest.raises(UnknownToken):
        auth.authenticate(f"Bearer {OPERATOR_TOKEN[:-1]}", None)

    # Not the operator, so it was tried as a Matrix token.
    assert len(homeserver.requests) == 1


def test_matrix_token_makes_a_user(auth: Authenticator, homeserver: FakeHomeserver) -> None:
    caller = auth.authenticate("Bearer bob-token", None)

    assert not caller.operator
    assert caller.user_id == "@bob:localhost"
    assert caller.owner == "@bob:localhost"
    assert caller.homeserver == homeserver.url
    assert caller.access_token == "bob-token"
    assert caller.may_see("@bob:localhost")
    assert not caller.may_see("@eve:localhost")
    assert not caller.may_see(OPERATOR_OWNER)
    (request,) = homeserver.requests
    assert request.method == "GET"
    assert request.path == "/_matrix/client/v3/account/whoami"
    assert request.headers["authorization"] == "Bearer bob-token"


def test_access_token_is_not_in_the_callers_repr(auth: Authenticator) -> None:
    assert "bob-token" not in repr(auth.authenticate("Bearer bob-token", None))


def test_without_operator_token_everything_is_a_matrix_token(
    matrix: MatrixClient, homeserver: FakeHomeserver
) -> None:
    auth = authenticator(matrix, homeserver.url, admin_token=None)

    assert auth.authenticate("Bearer eve-token", None).user_id == "@eve:localhost"


def test_bad_matrix_token_is_unknown_token(auth: Authenticator, homeserver: FakeHomeserver) -> None:
    with pytest.raises(UnknownToken) as caught:
        auth.authenticate("Bearer stolen-token", None)

    assert caught.value.status == 401
    assert len(homeserver.requests) == 1


def test_no_allowed_homeserver_is_unknown_token(
    matrix: MatrixClient, homeserver: FakeHomeserver
) -> None:
    with pytest.raises(UnknownToken, match="no homeserver"):
        authenticator(matrix).authenticate("Bearer bob-token", None)

    assert homeserver.requests == []


def test_several_homeservers_need_a_hint(matrix: MatrixClient, homeserver: FakeHomeserver) -> None:
    auth = authenticator(matrix, homeserver.url, OTHER_HOMESERVER)

    with pytest.raises(MissingParam, match="homeserver"):
        auth.authenticate("Bearer bob-token", None)

    assert homeserver.requests == []


def test_hint_chooses_among_several_homeservers(
    matrix: MatrixClient, homeserver: FakeHomeserver
) -> None:
    auth = authenticator(matrix, OTHER_HOMESERVER, homeserver.url)

    # The hint is normalised before the comparison.
    caller = auth.authenticate("Bearer bob-token", homeserver.url.upper() + "/")

    assert caller.homeserver == homeserver.url
    assert caller.user_id == "@bob:localhost"


def test_hint_that_is_not_allowed_is_forbidden(
    auth: Authenticator, homeserver: FakeHomeserver
) -> None:
    with pytest.raises(Forbidden) as caught:
        auth.authenticate("Bearer bob-token", OTHER_HOMESERVER)

    assert caught.value.status == 403
    assert homeserver.requests == []


def test_hint_that_is_not_a_url_is_invalid(auth: Authenticator, homeserver: FakeHomeserver) -> None:
    with pytest.raises(InvalidParam, match="homeserver"):
        auth.authenticate("Bearer bob-token", "matrix.example.org")

    assert homeserver.requests == []


def test_whoami_is_cached_for_60_seconds(
    auth: Authenticator, homeserver: FakeHomeserver, clock: Clock
) -> None:
    assert auth.authenticate("Bearer bob-token", None).user_id == "@bob:localhost"
    assert len(homeserver.requests) == 1

    clock.now += 59
    assert auth.authenticate("Bearer bob-token", None).user_id == "@bob:localhost"
    assert len(homeserver.requests) == 1

    clock.now += 2
    assert auth.authenticate("Bearer bob-token", None).user_id == "@bob:localhost"
    assert len(homeserver.requests) == 2


def test_cache_is_per_token(auth: Authenticator, homeserver: FakeHomeserver) -> None:
    assert auth.authenticate("Bearer bob-token", None).user_id == "@bob:localhost"
    assert auth.authenticate("Bearer eve-token", None).user_id == "@eve:localhost"

    assert len(homeserver.requests) == 2


def test_failures_are_not_cached(auth: Authenticator, homeserver: FakeHomeserver) -> None:
    for _ in range(2):
        with pytest.raises(UnknownToken):
            auth.authenticate("Bearer nobody-token", None)

    assert len(homeserver.requests) == 2


def test_homeserver_down_is_upstream_failed(matrix: MatrixClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    with pytest.raises(UpstreamFailed) as caught:
        authenticator(matrix, f"http://127.0.0.1:{port}").authenticate("Bearer bob-token", None)

    assert caught.value.status == 502
    assert "bob-token" not in str(caught.value)


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (Reply(500, {"errcode": "M_UNKNOWN", "error": "Internal server error"}), UpstreamFailed),
        (Reply(200, {"device_id": "DEV"}), UpstreamFailed),
        (Reply(200, b"<html>not json</html>"), UpstreamFailed),
        (Reply(403, {"errcode": "M_FORBIDDEN", "error": "Account locked"}), Forbidden),
    ],
    ids=["500", "no-user-id", "not-json", "403"],
)
def test_unexpected_whoami_answers(
    auth: Authenticator, homeserver: FakeHomeserver, reply: Reply, error: type[Exception]
) -> None:
    homeserver.queue(reply)

    with pytest.raises(error):
        auth.authenticate("Bearer bob-token", None)

    assert len(homeserver.requests) == 1


def test_whoami_redirect_is_not_followed(auth: Authenticator, homeserver: FakeHomeserver) -> None:
    location = f"{homeserver.url}/_matrix/client/v3/account/whoami?moved=1"
    homeserver.queue(Reply(302, None, {"Location": location}))

    with pytest.raises(UpstreamFailed, match="302"):
        auth.authenticate("Bearer bob-token", None)

    assert len(homeserver.requests) == 1
