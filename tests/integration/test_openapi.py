"""The OpenAPI document against the running gateway: Schemathesis generates requests for every
operation the document describes (from its schemas, examples and boundary values), sends them
over real HTTP to local mode, and checks every answer: no 5xx, a status the operation
documents, a body matching that status's schema. Code and document that disagree fail here.

Generated registrations carry arbitrary URLs: during this test the name resolver answers only
for localhost and the documentation names (`*.example.org`, as 127.0.0.1), so nothing is
looked up or reached beyond this machine.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.checks import CheckFunction

import mxpush
from mxpush_local.gateway import LocalGateway
from tests.conftest import ADMIN_TOKEN, Api, synapse_body
from tests.fakes.gotify import FakeGotify

OPENAPI_PATH = "/api/v1/openapi.json"
# Per operation and generation phase: about 730 requests in all (200, 201, 400, 401, 404, 405),
# 15-30 s on 2 busy cores.
EXAMPLES = 20
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
DOCUMENTATION_DOMAIN = ".example.org"

# The file the layer ships; the test below checks that the gateway serves exactly this.
# (Loaded at collection: Schemathesis' lazy fixture loader does not run under pytest 9.)
DOCUMENT = Path(mxpush.__file__).with_name("openapi.json")
schema = schemathesis.openapi.from_path(DOCUMENT)


def local_only_getaddrinfo(real: Callable[..., Any]) -> Callable[..., Any]:
    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        name = name.lower().rstrip(".")
        if name in LOCAL_NAMES:
            return real(name, port, *args, **kwargs)
        if name.endswith(DOCUMENTATION_DOMAIN):
            return real("127.0.0.1", port, *args, **kwargs)
        raise socket.gaierror(socket.EAI_NONAME, f"{name}: not resolved during this test")

    return getaddrinfo


@pytest.fixture
def local_names_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", local_only_getaddrinfo(socket.getaddrinfo))


def checks() -> list[CheckFunction]:
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )

    return [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_as_documented(
    case: Case[Any], gateway: LocalGateway, local_names_only: None
) -> None:
    case.call_and_validate(
        base_url=gateway.url,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        checks=checks(),
    )


def test_the_gateway_serves_the_document_it_ships(api: Api) -> None:
    answer = api.request("GET", OPENAPI_PATH, token=None)
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "application/json"
    shipped = json.loads(DOCUMENT.read_text(encoding="utf-8"))
    assert answer.body == shipped
    assert answer.body["openapi"].startswith("3.1")


def test_a_registered_pushkey_answers_as_documented(
    api: Api, gateway: LocalGateway, gotify: FakeGotify
) -> None:
    """Generated pushkeys are unknown (404): the answers for a real one, checked here against
    the same document: a test push delivered and refused, its log, the registration, its
    deletion."""
    pushkey = api.register(gotify, delay=0)
    api.notify(synapse_body("message_dm_2_members.1.full", pushkey))
    one = "/api/v1/pushkeys/{pushkey}"

    def call(method: str, path: str, expected: int) -> Any:
        case = schema[path][method].Case(path_parameters={"pushkey": pushkey})
        # A refused test push answers 502 by design (the backend failed, not the gateway):
        # documented, so only "no 5xx" is left out for it.
        chosen = [c for c in checks() if expected != 502 or c.__name__ != "not_a_server_error"]
        answer = case.call_and_validate(
            base_url=gateway.url,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            checks=chosen,
        )
        assert answer.status_code == expected, answer.text
        return answer.json() if answer.content else None

    assert call("POST", one + "/test", 200) == {"outcome": "delivered"}
    gotify.revoke(gotify.app_tokens.copy().pop())
    assert call("POST", one + "/test", 502)["outcome"] == "rejected"
    assert {d["outcome"] for d in call("GET", one + "/deliveries", 200)["deliveries"]} >= {
        "delivered",
        "rejected",
    }
    assert call("GET", one, 200)["status"] == "rejected"
    assert call("DELETE", one, 204) is None
    call("GET", one, 404)


def test_the_document_is_valid_openapi_3_1() -> None:
    # The OpenAPI 3.1 meta-schema Schemathesis ships (the pinned version's module).
    from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

    document = json.loads(DOCUMENT.read_text(encoding="utf-8"))
    assert [str(e) for e in OPENAPI_31_VALIDATOR.iter_errors(document)] == []


def test_every_route_and_method_is_documented(api: Api, gateway: LocalGateway) -> None:
    """The template's routes are the document's paths, and on each the methods its handler
    takes (the `Allow` of a 405) are the documented ones."""
    document = json.loads(DOCUMENT.read_text(encoding="utf-8"))
    routes = {
        route.path
        for spec in gateway.template.functions.values()
        for route in spec.routes
        if route.path != "$default"
    }
    assert routes == set(document["paths"])
    for path, item in document["paths"].items():
        documented = {m.upper() for m in item if m != "parameters"}
        answer = api.request("PATCH", path.replace("{pushkey}", "mxp_unknown"), token=None)
        assert answer.status == 405, path
        assert set(answer.headers["Allow"].split(", ")) == documented, path


def test_an_oversized_notify_answers_as_documented(gateway: LocalGateway) -> None:
    """413 is documented but out of the generated bodies' reach (512 KiB)."""
    body = synapse_body("message_dm_2_members.1.full", "mxp_unknown")
    body["notification"]["content"]["body"] = "x" * 600_000
    case = schema["/_matrix/push/v1/notify"]["POST"].Case(body=body)
    answer = case.call_and_validate(base_url=gateway.url, checks=checks())
    assert answer.status_code == 413
    assert answer.json()["errcode"] == "M_TOO_LARGE"
