"""API Gateway HTTP API (payload format 2.0) events in, Lambda proxy responses out.

A tiny router instead of a framework: two handlers with a handful of routes, where the
contract needs 404 and 405 both as `M_UNRECOGNIZED`, and cold start matters. `serve` is every
API handler's body: it turns each exception into an answer, by type.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

from mxpush.errors import (
    ApiError,
    InfrastructureUnavailable,
    MethodNotAllowed,
    ServiceUnavailable,
    Unrecognized,
)

log = logging.getLogger(__name__)

JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: Mapping[str, str]
    query: Mapping[str, str]
    body: bytes
    domain: str | None = None
    stage: str | None = None
    path_params: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> Request:
        context = event.get("requestContext") or {}
        http = context.get("http") or {}
        raw_body = event.get("body") or ""
        if event.get("isBase64Encoded"):
            try:
                body = base64.b64decode(raw_body)
            except ValueError:
                body = b"\xff"  # not decodable: let JSON parsing report it
        else:
            body = raw_body.encode("utf-8") if isinstance(raw_body, str) else bytes(raw_body)
        headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
        query = {k: v[-1] for k, v in parse_qs(event.get("rawQueryString") or "").items() if v}
        return cls(
            method=str(http.get("method") or event.get("httpMethod") or "GET").upper(),
            path=str(event.get("rawPath") or http.get("path") or "/"),
            headers=headers,
            query=query,
            body=body,
            domain=context.get("domainName"),
            stage=context.get("stage"),
        )

    def base_url(self) -> str | None:
        """This API's base URL as seen by the caller (API Gateway's domain and stage)."""
        if not self.domain:
            return None
        proto = self.headers.get("x-forwarded-proto", "https")
        stage = "" if self.stage in (None, "", "$default") else f"/{self.stage}"
        return f"{proto}://{self.domain}{stage}"


def json_response(
    status: int, body: Any, headers: Mapping[str, str] | None = None
) -> dict[str, Any]:
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate no UTF-8 can carry: escaped, the answer is still the same JSON.
        text = json.dumps(body, separators=(",", ":"))
    return {
        "statusCode": status,
        "headers": {**JSON_HEADERS, **(headers or {})},
        "body": text,
    }


def empty_response(status: int = 204) -> dict[str, Any]:
    return {"statusCode": status, "headers": {}, "body": ""}


def error_response(error: ApiError) -> dict[str, Any]:
    headers = (
        {"Allow": error.allow} if isinstance(error, MethodNotAllowed) and error.allow else None
    )
    return json_response(error.status, {"errcode": error.errcode, "error": error.error}, headers)


Handler = Callable[[Request], dict[str, Any]]


class Router:
    """Routes `(method, path template)` to handlers; `{name}` matches one path segment."""

    def __init__(self) -> None:
        self._routes: list[tuple[re.Pattern[str], dict[str, Handler]]] = []

    def route(self, method: str, template: str) -> Callable[[Handler], Handler]:
        pattern = re.compile(
            "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "/?$"
        )

        def register(handler: Handler) -> Handler:
            for existing, methods in self._routes:
                if existing.pattern == pattern.pattern:
                    methods[method.upper()] = handler
                    return handler
            self._routes.append((pattern, {method.upper(): handler}))
            return handler

        return register

    def dispatch(self, request: Request) -> dict[str, Any]:
        for pattern, methods in self._routes:
            match = pattern.match(request.path)
            if match is None:
                continue
            handler = methods.get(request.method)
            if handler is None and is_cors_preflight(request):
                # With CorsConfiguration, API Gateway may pass a preflight to an ANY route's
                # function instead of answering it: a 2xx it adds its CORS headers to. Without
                # CORS there are none, and the browser refuses as it should.
                return empty_response(204)
            if handler is None:
                raise MethodNotAllowed(
                    f"{request.method} is not supported on {request.path}",
                    allow=", ".join(sorted(methods)),
                )
            params = {k: unquote(v) for k, v in match.groupdict().items()}
            return handler(
                Request(
                    method=request.method,
                    path=request.path,
                    headers=request.headers,
                    query=request.query,
                    body=request.body,
                    domain=request.domain,
                    stage=request.stage,
                    path_params=params,
                )
            )
        raise Unrecognized(f"no such endpoint: {request.path}")


def is_cors_preflight(request: Request) -> bool:
    return (
        request.method == "OPTIONS"
        and "origin" in request.headers
        and "access-control-request-method" in request.headers
    )


def serve(router: Router, event: Mapping[str, Any]) -> dict[str, Any]:
    """Answer one API Gateway event: what its route answers, or the answer for the exception
    it raised: an `ApiError`'s own, 503 for an AWS outage, and for any other (a bug) 500 with
    the request id, logged once with its traceback."""
    try:
        return router.dispatch(Request.from_event(event))
    except ApiError as exc:
        return error_response(exc)
    except InfrastructureUnavailable as exc:
        # An outage, not a bug: no traceback. The message names the service, never data.
        log.error("service unavailable", extra={"reason": str(exc)})  # noqa: TRY400
        return error_response(ServiceUnavailable("a service is unavailable; retry later"))
    except Exception as exc:  # noqa: BLE001 - the last resort: answer in JSON, leave a trace
        request_id = _request_id(event)
        log.error(  # noqa: TRY400 - logger.exception would log the message, see _traceback
            "unhandled exception",
            extra={"exception_name": type(exc).__name__, "traceback": _traceback(exc)},
        )
        body: dict[str, Any] = {"errcode": "M_UNKNOWN", "error": "internal server error"}
        if request_id:
            body["request_id"] = request_id
        return json_response(500, body)


def _request_id(event: Mapping[str, Any]) -> str | None:
    context = event.get("requestContext")
    request_id = context.get("requestId") if isinstance(context, Mapping) else None
    return request_id if isinstance(request_id, str) else None


def _traceback(exc: BaseException) -> str:
    """Where the exception came from, without its message: that may quote the request (a
    `KeyError` names its key, a `UnicodeError` its text), and logs never carry request data."""
    frames = traceback.TracebackException.from_exception(exc, capture_locals=False).stack
    return "".join(frames.format()) + type(exc).__qualname__
