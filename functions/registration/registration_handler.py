"""The registration API (`/api/v1/pushkeys...`), the Acrobits push token report, and the
API's catch-all route.

Thin: authenticate, parse, call `mxpush.registration`, shape the answer.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from mxpush import wiring
from mxpush.auth import Authenticator, Caller
from mxpush.http_api import JSON_HEADERS, Request, Router, empty_response, json_response, serve
from mxpush.ids import log_ref
from mxpush.model import Outcome
from mxpush.notification import load_json
from mxpush.push_token_report import report_push_token
from mxpush.registration import (
    RegistrationContext,
    describe,
    get_registration,
    list_deliveries,
    list_registrations,
    register,
    send_test_push,
    unregister,
)
from mxpush.unsubscribe import UNSUBSCRIBE_PATH, check_token, confirmation_page, unsubscribe

logger = Logger(service="mxpush")
router = Router()
PUSHKEYS = "/api/v1/pushkeys"
ONE_PUSHKEY = PUSHKEYS + "/{pushkey}"
REPORT_PATH = "/api/client/push_token_report"


def context() -> RegistrationContext:
    return RegistrationContext(
        store=wiring.store(),
        matrix=wiring.matrix_client(),
        http=wiring.outbound_http(),
        policy=wiring.target_policy(),
        settings=wiring.settings(),
        clock=wiring.clock,
    )


def authenticate(request: Request, homeserver_hint: Any = None) -> Caller:
    settings = wiring.settings()
    authenticator = Authenticator(
        admin_token=wiring.admin_token(),
        allowed_homeservers=settings.allowed_homeservers,
        matrix=wiring.matrix_client(),
    )
    hint = homeserver_hint if isinstance(homeserver_hint, str) else request.query.get("homeserver")
    return authenticator.authenticate(request.headers.get("authorization"), hint)


@router.route("POST", PUSHKEYS)
def create(request: Request) -> dict[str, Any]:
    body = load_json(request.body) if request.body else None
    hint = body.get("homeserver") if isinstance(body, dict) else None
    caller = authenticate(request, hint)
    gateway_url = wiring.settings().public_url or request.base_url() or ""
    return json_response(201, register(body, caller, context(), gateway_url=gateway_url))


@router.route("GET", PUSHKEYS)
def list_all(request: Request) -> dict[str, Any]:
    return json_response(200, list_registrations(authenticate(request), context()))


@router.route("GET", ONE_PUSHKEY)
def get_one(request: Request) -> dict[str, Any]:
    ctx = context()
    registration = get_registration(request.path_params["pushkey"], authenticate(request), ctx)
    return json_response(200, describe(registration, ctx.settings, ctx.store))


@router.route("DELETE", ONE_PUSHKEY)
def delete_one(request: Request) -> dict[str, Any]:
    warnings = unregister(request.path_params["pushkey"], authenticate(request), context())
    for warning in warnings:
        logger.warning("unregister", extra={"warning": warning})
    return empty_response(204)


@router.route("POST", ONE_PUSHKEY + "/test")
def test_push(request: Request) -> dict[str, Any]:
    result = send_test_push(request.path_params["pushkey"], authenticate(request), context())
    if result.outcome is Outcome.DELIVERED:
        return json_response(200, {"outcome": result.outcome.value})
    return json_response(
        502,
        {
            "errcode": "M_UNKNOWN",
            "error": result.reason or "the backend did not take the push",
            "outcome": result.outcome.value,
        },
    )


@router.route("GET", ONE_PUSHKEY + "/deliveries")
def deliveries(request: Request) -> dict[str, Any]:
    return json_response(
        200, list_deliveries(request.path_params["pushkey"], authenticate(request), context())
    )


@router.route("POST", REPORT_PATH)
def push_token_report(request: Request) -> dict[str, Any]:
    """matrix2acrobits' endpoint: an Acrobits softphone reports its push tokens."""
    body = load_json(request.body) if request.body else None
    hint = body.get("homeserver") if isinstance(body, dict) else None
    caller = authenticate(request, hint)
    answer = report_push_token(
        body,
        caller,
        store=wiring.store(),
        matrix=wiring.matrix_client(),
        policy=wiring.target_policy(),
        clock=wiring.clock,
        gateway_url=wiring.settings().public_url or request.base_url() or "",
    )
    return json_response(200, answer)


@router.route("GET", UNSUBSCRIBE_PATH)
def unsubscribe_page(request: Request) -> dict[str, Any]:
    """An email's unsubscribe link opened in a browser: a page whose button POSTs it. Never
    unsubscribes by itself (mail scanners fetch links). No Bearer token: the signed link is it."""
    token = request.query.get("t")
    check_token(wiring.unsubscribe_key(), token, now=wiring.clock())
    return _html(200, confirmation_page(token or "", done=False))


@router.route("POST", UNSUBSCRIBE_PATH)
def unsubscribe_now(request: Request) -> dict[str, Any]:
    """RFC 8058 one-click (a mail client POSTs `List-Unsubscribe=One-Click`), or the page's
    button: email delivery of the link's registration stops."""
    registration = unsubscribe(
        wiring.store(), wiring.unsubscribe_key(), request.query.get("t"), clock=wiring.clock
    )
    logger.info("unsubscribed", extra={"pushkey": log_ref(registration.rid)})
    if "text/html" in request.headers.get("accept", ""):
        return _html(200, confirmation_page("", done=True))
    return json_response(200, {"unsubscribed": True, "status": registration.status.value})


def _html(status: int, page: str) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"},
        "body": page,
    }


@router.route("GET", "/api/v1/webpush/vapid-public-key")
def vapid_public_key(request: Request) -> dict[str, Any]:
    """No authentication: the key is public by design. Every web app needs it before it can
    subscribe (`applicationServerKey`), and every push carries it in its Authorization header."""
    return json_response(200, {"public_key": wiring.vapid_key().public_key})


@router.route("GET", "/api/v1/openapi.json")
def openapi_document(request: Request) -> dict[str, Any]:
    """The OpenAPI 3.1 description of the whole API, public like the API's shape itself."""
    return {"statusCode": 200, "headers": dict(JSON_HEADERS), "body": _openapi_text()}


@functools.cache
def _openapi_text() -> str:
    # In the layer beside the code it describes: local mode and AWS ship the same file.
    return resources.files("mxpush").joinpath("openapi.json").read_text(encoding="utf-8")


@logger.inject_lambda_context(
    correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True
)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return serve(router, event)
