"""`http_api.serve`: every exception a route raises becomes an answer, chosen by type; a bug is
answered 500 with the request id and logged once, with its traceback, under that id."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any, cast

import pytest
from aws_lambda_powertools.utilities.typing import LambdaContext

import notify_handler
from mxpush.errors import NotFound, SchedulerUnavailable, StoreUnavailable
from mxpush.http_api import Request, Router, json_response, serve
from mxpush_local.aws import FakeLambdaContext

SECRET = "mxp_secret_pushkey_0123456789"
REQUEST_ID = "Zr8xYj2hIAMEVZw="


def event(path: str = "/boom", method: str = "GET", body: str = "") -> dict[str, Any]:
    return {
        "version": "2.0",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {},
        "body": body,
        "isBase64Encoded": False,
        "requestContext": {"http": {"method": method, "path": path}, "requestId": REQUEST_ID},
    }


def router_raising(exc: Exception) -> Router:
    router = Router()

    @router.route("GET", "/boom")
    def boom(request: Request) -> dict[str, Any]:
        raise exc

    @router.route("GET", "/fine")
    def fine(request: Request) -> dict[str, Any]:
        return json_response(200, {"ok": True})

    return router


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    """What mxpush logs, however the root logger is set up."""
    found: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            found.append(record)

    handler = Collect(level=logging.DEBUG)
    logger = logging.getLogger("mxpush")
    logger.addHandler(handler)
    yield found
    logger.removeHandler(handler)


def answer(result: dict[str, Any]) -> tuple[int, Any]:
    return result["statusCode"], json.loads(result["body"])


def test_a_bug_is_answered_500_with_the_request_id(records: list[logging.LogRecord]) -> None:
    status, body = answer(serve(router_raising(KeyError(SECRET)), event()))

    assert status == 500
    assert body == {
        "errcode": "M_UNKNOWN",
        "error": "internal server error",
        "request_id": REQUEST_ID,
    }
    [record] = [r for r in records if r.levelno >= logging.ERROR]
    assert record.getMessage() == "unhandled exception"
    assert record.__dict__["exception_name"] == "KeyError"
    traceback = record.__dict__["traceback"]
    assert "in boom" in traceback
    assert traceback.endswith("KeyError")
    # The exception's message may quote the request: never logged.
    assert SECRET not in traceback
    assert SECRET not in record.getMessage()


def test_without_a_request_id_the_answer_has_none() -> None:
    incoming = event()
    del incoming["requestContext"]["requestId"]
    status, body = answer(serve(router_raising(RuntimeError("x")), incoming))
    assert status == 500
    assert "request_id" not in body


def test_a_malformed_event_is_a_500_not_a_crash() -> None:
    broken: Any = {"requestContext": {"requestId": REQUEST_ID}, "headers": ["not", "a", "map"]}
    status, body = answer(serve(router_raising(RuntimeError("x")), broken))
    assert (status, body["request_id"]) == (500, REQUEST_ID)


@pytest.mark.parametrize("outage", [StoreUnavailable("DynamoDB"), SchedulerUnavailable("SFN")])
def test_an_outage_is_503_without_traceback(
    records: list[logging.LogRecord], outage: Exception
) -> None:
    status, body = answer(serve(router_raising(outage), event()))

    assert status == 503
    assert body["errcode"] == "M_UNKNOWN"
    [record] = [r for r in records if r.levelno >= logging.ERROR]
    assert record.getMessage() == "service unavailable"
    assert "traceback" not in record.__dict__
    assert record.exc_info is None


def test_api_errors_and_answers_pass_through(records: list[logging.LogRecord]) -> None:
    assert answer(serve(router_raising(NotFound("no such pushkey")), event())) == (
        404,
        {"errcode": "M_NOT_FOUND", "error": "no such pushkey"},
    )
    assert answer(serve(router_raising(RuntimeError()), event("/fine"))) == (200, {"ok": True})
    assert [r for r in records if r.levelno >= logging.ERROR] == []


def test_an_answer_no_utf8_can_carry_is_escaped() -> None:
    result = json_response(200, {"text": "\ud800"})
    result["body"].encode("utf-8")
    assert json.loads(result["body"]) == {"text": "\ud800"}


def test_lambda_handler_logs_the_request_id_as_correlation_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def failing(raw: bytes) -> Any:
        raise ZeroDivisionError

    monkeypatch.setattr(notify_handler, "parse_notify_body", failing)
    # Format as the function's own (Powertools) handler does on AWS.
    powertools = notify_handler.logger
    output = io.StringIO()
    handler = logging.StreamHandler(output)
    handler.setFormatter(powertools.registered_formatter)
    logging.getLogger("mxpush").addHandler(handler)
    try:
        result = notify_handler.lambda_handler(
            event("/_matrix/push/v1/notify", "POST", "{}"),
            cast(LambdaContext, FakeLambdaContext("NotifyFunction")),
        )
    finally:
        logging.getLogger("mxpush").removeHandler(handler)

    status, body = answer(result)
    assert (status, body["request_id"]) == (500, REQUEST_ID)
    [line] = [json.loads(x) for x in output.getvalue().splitlines() if "unhandled" in x]
    assert line["level"] == "ERROR"
    assert line["correlation_id"] == REQUEST_ID
    assert line["exception_name"] == "ZeroDivisionError"
    assert "ZeroDivisionError" in line["traceback"]
