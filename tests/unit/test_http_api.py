"""`http_api`: API Gateway HTTP API (payload 2.0) events in, Lambda proxy responses out."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from mxpush.errors import BadJson, MethodNotAllowed, NotJson, UnknownToken, Unrecognized
from mxpush.http_api import Handler, Request, Router, error_response, json_response
from mxpush.notification import load_json

DOMAIN = "abc123.execute-api.eu-west-1.amazonaws.com"


def event(
    method: str = "GET",
    path: str = "/",
    *,
    query: str = "",
    headers: dict[str, str] | None = None,
    body: str | None = None,
    base64_encoded: bool = False,
    stage: str = "$default",
) -> dict[str, Any]:
    """An event shaped like the ones API Gateway HTTP APIs send (payload format 2.0)."""
    result: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers or {},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": DOMAIN,
            "domainPrefix": "abc123",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1"},
            "stage": stage,
        },
        "isBase64Encoded": base64_encoded,
    }
    if body is not None:
        result["body"] = body
    return result


# --- Request.from_event -------------------------------------------------------------------------


def test_from_event_basic_fields() -> None:
    request = Request.from_event(
        event(
            "post",
            "/_matrix/push/v1/notify",
            headers={"Content-Type": "application/json", "X-Forwarded-Proto": "https"},
            body='{"notification": {}}',
        )
    )

    assert request.method == "POST"
    assert request.path == "/_matrix/push/v1/notify"
    assert request.body == b'{"notification": {}}'
    assert request.domain == DOMAIN
    assert request.stage == "$default"
    assert dict(request.path_params) == {}


def test_headers_are_lower_cased() -> None:
    request = Request.from_event(
        event(headers={"Authorization": "Bearer t", "X-MIXED-Case": "v", "accept": "a"})
    )

    assert dict(request.headers) == {
        "authorization": "Bearer t",
        "x-mixed-case": "v",
        "accept": "a",
    }


def test_raw_query_string_is_parsed_and_decoded() -> None:
    request = Request.from_event(
        event(query="homeserver=https%3A%2F%2Fmatrix.example.org&limit=5&name=a+b&limit=7")
    )

    assert dict(request.query) == {
        "homeserver": "https://matrix.example.org",
        "limit": "7",  # the last of repeated parameters
        "name": "a b",
    }


def test_empty_query_string() -> None:
    assert dict(Request.from_event(event(query="")).query) == {}


def test_base64_body_is_decoded() -> None:
    raw = b"\x00\x01binary\xff"
    request = Request.from_event(
        event("POST", "/x", body=base64.b64encode(raw).decode(), base64_encoded=True)
    )

    assert request.body == raw


def test_plain_body_is_utf8_encoded() -> None:
    request = Request.from_event(event("POST", "/x", body='{"room_name": "Café"}'))

    assert request.body == '{"room_name": "Café"}'.encode()


def test_missing_body_is_empty() -> None:
    assert Request.from_event(event("POST", "/x")).body == b""


def test_undecodable_base64_body_is_left_for_json_parsing_to_refuse() -> None:
    request = Request.from_event(event("POST", "/x", body="abc", base64_encoded=True))

    with pytest.raises(NotJson):
        load_json(request.body)


@pytest.mark.parametrize(
    ("stage", "headers", "expected"),
    [
        ("$default", {}, f"https://{DOMAIN}"),
        ("prod", {}, f"https://{DOMAIN}/prod"),
        ("$default", {"X-Forwarded-Proto": "http"}, f"http://{DOMAIN}"),
    ],
)
def test_base_url(stage: str, headers: dict[str, str], expected: str) -> None:
    assert Request.from_event(event(stage=stage, headers=headers)).base_url() == expected


def test_base_url_without_domain_is_none() -> None:
    raw = event()
    del raw["requestContext"]["domainName"]

    assert Request.from_event(raw).base_url() is None


def test_from_event_tolerates_a_bare_event() -> None:
    request = Request.from_event({})

    assert (request.method, request.path, request.body) == ("GET", "/", b"")
    assert dict(request.headers) == {}


# --- Router -------------------------------------------------------------------------------------


def make_router() -> tuple[Router, list[Request]]:
    seen: list[Request] = []
    router = Router()

    def handler(name: str) -> Handler:
        def handle(request: Request) -> dict[str, Any]:
            seen.append(request)
            return json_response(200, {"handler": name})

        return handle

    router.route("GET", "/api/v1/pushkeys")(handler("list"))
    router.route("POST", "/api/v1/pushkeys")(handler("create"))
    router.route("GET", "/api/v1/pushkeys/{pushkey}")(handler("get"))
    router.route("DELETE", "/api/v1/pushkeys/{pushkey}")(handler("delete"))
    router.route("GET", "/api/v1/pushkeys/{pushkey}/deliveries")(handler("deliveries"))
    return router, seen


def dispatch(router: Router, method: str, path: str) -> dict[str, Any]:
    return router.dispatch(Request.from_event(event(method, path)))


def handler_name(response: dict[str, Any]) -> str:
    return str(json.loads(response["body"])["handler"])


@pytest.mark.parametrize(
    ("method", "path", "name"),
    [
        ("GET", "/api/v1/pushkeys", "list"),
        ("POST", "/api/v1/pushkeys", "create"),
        ("GET", "/api/v1/pushkeys/abc", "get"),
        ("DELETE", "/api/v1/pushkeys/abc", "delete"),
        ("GET", "/api/v1/pushkeys/abc/deliveries", "deliveries"),
        ("get", "/api/v1/pushkeys", "list"),
    ],
)
def test_routes_by_method_and_path(method: str, path: str, name: str) -> None:
    router, _ = make_router()

    assert handler_name(dispatch(router, method, path)) == name


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/api/v1/pushkeys/", "list"),
        ("/api/v1/pushkeys/abc/", "get"),
        ("/api/v1/pushkeys/abc/deliveries/", "deliveries"),
    ],
)
def test_trailing_slash_is_tolerated(path: str, name: str) -> None:
    router, _ = make_router()

    assert handler_name(dispatch(router, "GET", path)) == name


def test_path_params_are_url_decoded() -> None:
    router, seen = make_router()

    dispatch(router, "GET", "/api/v1/pushkeys/a%2Fb%20c%3A%24/deliveries")

    assert dict(seen[0].path_params) == {"pushkey": "a/b c:$"}
    assert seen[0].path == "/api/v1/pushkeys/a%2Fb%20c%3A%24/deliveries"


def test_handler_receives_the_rest_of_the_request() -> None:
    router, seen = make_router()
    raw = event("POST", "/api/v1/pushkeys", query="a=1", headers={"X-K": "v"}, body="{}")

    router.dispatch(Request.from_event(raw))

    (request,) = seen
    assert (request.method, request.body, dict(request.query)) == ("POST", b"{}", {"a": "1"})
    assert request.headers["x-k"] == "v"
    assert request.domain == DOMAIN


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/api/v1",
        "/api/v1/pushkey",
        "/api/v1/pushkeys/abc/deliveries/extra",
        "/api/v1/pushkeys//deliveries",
        "/API/V1/PUSHKEYS",
        "/prefix/api/v1/pushkeys",
    ],
)
def test_unknown_path_is_unrecognized(path: str) -> None:
    router, seen = make_router()

    with pytest.raises(Unrecognized) as caught:
        dispatch(router, "GET", path)

    assert type(caught.value) is Unrecognized
    assert caught.value.status == 404
    assert caught.value.errcode == "M_UNRECOGNIZED"
    assert seen == []


def test_a_cors_preflight_on_a_known_path_is_answered_204_without_a_handler() -> None:
    router, seen = make_router()
    preflight = {"Origin": "https://app.example.org", "Access-Control-Request-Method": "POST"}

    response = router.dispatch(
        Request.from_event(event("OPTIONS", "/api/v1/pushkeys", headers=preflight))
    )

    assert (response["statusCode"], response["body"]) == (204, "")
    assert seen == []
    # Not a preflight (no Origin): still 405. Unknown path: still 404.
    with pytest.raises(MethodNotAllowed):
        dispatch(router, "OPTIONS", "/api/v1/pushkeys")
    with pytest.raises(Unrecognized):
        router.dispatch(Request.from_event(event("OPTIONS", "/nowhere", headers=preflight)))


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/api/v1/pushkeys", "GET, POST"),
        ("POST", "/api/v1/pushkeys/abc", "DELETE, GET"),
        ("DELETE", "/api/v1/pushkeys/abc/deliveries", "GET"),
    ],
)
def test_wrong_method_is_method_not_allowed(method: str, path: str, allow: str) -> None:
    router, seen = make_router()

    with pytest.raises(MethodNotAllowed) as caught:
        dispatch(router, method, path)

    assert caught.value.status == 405
    assert caught.value.errcode == "M_UNRECOGNIZED"
    assert caught.value.allow == allow
    assert seen == []


def test_a_later_registration_of_the_same_route_adds_a_method() -> None:
    router = Router()
    router.route("GET", "/x/{id}")(lambda r: json_response(200, {"m": "get"}))
    router.route("put", "/x/{id}")(lambda r: json_response(200, {"m": "put"}))

    answer = router.dispatch(Request.from_event(event("PUT", "/x/1")))

    assert json.loads(answer["body"]) == {"m": "put"}


# --- responses ----------------------------------------------------------------------------------


def test_error_response_shape() -> None:
    response = error_response(BadJson('notification.prio: must be "high" or "low"'))

    assert response["statusCode"] == 400
    assert response["headers"] == {"Content-Type": "application/json"}
    assert json.loads(response["body"]) == {
        "errcode": "M_BAD_JSON",
        "error": 'notification.prio: must be "high" or "low"',
    }


def test_error_response_status_comes_from_the_type() -> None:
    response = error_response(UnknownToken("unknown token"))

    assert response["statusCode"] == 401
    assert json.loads(response["body"])["errcode"] == "M_UNKNOWN_TOKEN"


def test_method_not_allowed_response_has_allow_header() -> None:
    response = error_response(MethodNotAllowed("PUT is not supported", allow="GET, POST"))

    assert response["statusCode"] == 405
    assert response["headers"] == {"Content-Type": "application/json", "Allow": "GET, POST"}
    assert json.loads(response["body"]) == {
        "errcode": "M_UNRECOGNIZED",
        "error": "PUT is not supported",
    }


def test_unrecognized_response_has_no_allow_header() -> None:
    response = error_response(Unrecognized("no such endpoint: /x"))

    assert response["statusCode"] == 404
    assert "Allow" not in response["headers"]


def test_json_response_keeps_non_ascii() -> None:
    response = json_response(200, {"room": "Café"}, {"X-Extra": "1"})

    assert response["body"] == '{"room":"Café"}'
    assert response["headers"] == {"Content-Type": "application/json", "X-Extra": "1"}
