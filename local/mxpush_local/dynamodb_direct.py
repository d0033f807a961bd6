"""Local mode's DynamoDB requests, answered by moto in process without the HTTP round trip.

A DynamoDB request through moto's mock normally goes: botocore validates and serializes the
parameters, signs the request and hands it to moto's stub; moto rebuilds a werkzeug request,
parses the body again against the service model, runs the action, serializes the result, and
botocore parses that answer back. Under load that detour was ~75% of a request's CPU (local
mode is bound by one core: the GIL), for nothing a test or a user could observe.

`InProcessDynamoDB` is a botocore `before-call` handler: botocore still validates and
serializes the parameters exactly as it would for AWS (a malformed request fails the same way),
then the handler runs the same moto action method on them under local mode's DynamoDB lock and
returns what botocore's own JSON parser makes of the result, or the same error. Only data-plane
operations take this path; everything else (CreateTable, TTL, ...) goes through moto's stub.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
from collections.abc import Callable
from typing import Any, cast

import boto3
import botocore.handlers
import botocore.parsers
from botocore.awsrequest import AWSResponse, HTTPHeaders
from moto.core.exceptions import ServiceException
from moto.core.parse import PROTOCOL_PARSERS
from moto.core.responses import ActionResult
from moto.core.utils import get_service_model
from moto.dynamodb.models import dynamodb_backends
from moto.dynamodb.responses import DynamoHandler
from werkzeug.datastructures import Headers, MultiDict
from werkzeug.exceptions import HTTPException

from mxpush_local.fast_query import answer_query
from mxpush_local.priority import requests_first

_EVENT = "before-call.dynamodb"
# A binary value in a request or response body: a `"B"` or `"BS"` key (inside a string those
# quotes would be escaped; a false alarm only costs the slower parser).
_BINARY_TYPE = re.compile(r'"BS?"\s*:')
_UNIQUE_ID = "mxpush-local-in-process-dynamodb"
_TARGET_PREFIX = "DynamoDB_20120810."
_JSON_HEADERS = {"Content-Type": "application/x-amz-json-1.0"}
# What DynamoDB answers for a failure of its own.
_INTERNAL_ERROR = json.dumps(
    {
        "__type": "com.amazonaws.dynamodb.v20120810#InternalServerError",
        "message": "Internal server error",
    }
)

log = logging.getLogger("mxpush_local")
# Operations answered in process (the ones mxpush makes on its table): moto's method for each.
_METHODS = {
    "GetItem": "get_item",
    "PutItem": "put_item",
    "UpdateItem": "update_item",
    "DeleteItem": "delete_item",
    "Query": "query",
    "Scan": "scan",
    "BatchGetItem": "batch_get_item",
    "BatchWriteItem": "batch_write_item",
    "TransactWriteItems": "transact_write_items",
    "TransactGetItems": "transact_get_items",
}
DIRECT_OPERATIONS = frozenset(_METHODS)

# (status, headers, body) as moto's handlers answer.
Answer = tuple[int, dict[str, str], str]
# Refuses a request (its parsed parameters) before moto runs it (an oversized expression), or
# None.
Refusal = Callable[[dict[str, Any]], Answer | None]
# Called under the lock after every request moto handled: (handler, answer).
AfterRequest = Callable[[Any, Answer], None]


class InProcessDynamoDB:
    """The `before-call` handler; `install` registers it for every botocore client made after,
    `uninstall` makes it step aside (clients made meanwhile keep it registered, inactive)."""

    _active: InProcessDynamoDB | None = None
    _registered = False

    def __init__(
        self,
        *,
        account: str,
        region: str,
        lock: threading.RLock,
        refuse: Refusal,
        after_request: AfterRequest,
    ) -> None:
        self.account = account
        self.region = region
        self.lock = lock
        self.refuse = refuse
        self.after_request = after_request
        self._parser = botocore.parsers.create_parser("json")
        # Requests answered here, and Queries among them answered by `fast_query` (tests
        # check that each path is taken).
        self.answered = 0
        self.fast_queries = 0

    def install(self) -> None:
        cls = type(self)
        cls._active = self
        if not cls._registered:
            # Clients copy the built-in handlers when their session is made: local mode starts
            # before the handlers make their clients (`wiring.reset()`).
            botocore.handlers.BUILTIN_HANDLERS.append((_EVENT, _dispatch))
            cls._registered = True
        # boto3's default session may predate the line above (it registers them once).
        default = boto3.DEFAULT_SESSION
        if default is not None:
            default._session.register(_EVENT, cast("Any", _dispatch), unique_id=_UNIQUE_ID)

    def uninstall(self) -> None:
        if type(self)._active is self:
            type(self)._active = None

    def answer(self, model: Any, params: dict[str, Any]) -> tuple[AWSResponse, dict[str, Any]]:
        requests_first.background_turn()
        operation = model.name
        raw_body = params.get("body") or b"{}"
        handler = DynamoHandler()
        body = _parse_request(handler, operation, raw_body)
        refusal = self.refuse(body)
        if refusal is not None:
            return self._response(model, refusal)
        if operation == "Query":
            fast = self._fast_query(body)
            if fast is not None:
                return fast
        handler.current_account = self.account
        handler.region = self.region
        handler.headers = {"X-Amz-Target": _TARGET_PREFIX + operation}
        handler.querystring = {}
        handler.response_headers = {}
        handler.body = body
        handler.params = body
        with self.lock:
            answer = _run(handler, _METHODS[operation])
            self.after_request(handler, answer)
            self.answered += 1
        return self._response(model, answer)

    def _fast_query(self, request: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        if not isinstance(request, dict):
            return None
        tables = dynamodb_backends[self.account][self.region].tables
        with self.lock:
            plain = answer_query(request, tables)
            if plain is None:
                return None
            self.answered += 1
            self.fast_queries += 1
        plain["ResponseMetadata"] = {"HTTPStatusCode": 200, "HTTPHeaders": dict(_JSON_HEADERS)}
        return _http(200, _JSON_HEADERS), plain

    def _response(self, model: Any, answer: Answer) -> tuple[AWSResponse, dict[str, Any]]:
        status, headers, body = answer
        if status == 200 and not _BINARY_TYPE.search(body):
            # Without binary values botocore's parser hands DynamoDB JSON back as it is (it
            # base64-decodes B and BS): skip its shape walk (~10% of local mode's CPU).
            plain = json.loads(body)
            plain["ResponseMetadata"] = {"HTTPStatusCode": 200, "HTTPHeaders": headers}
            return _http(status, headers), plain
        raw = {"body": body.encode(), "headers": headers, "status_code": status}
        parsed = self._parser.parse(raw, model.output_shape)
        if status >= 300:
            # As botocore's endpoint does: the error's modeled fields (a failed condition's
            # old item) join the parsed error.
            code = parsed.get("Error", {}).get("Code")
            shape = model.service_model.shape_for_error_code(code) if code else None
            if shape is not None:
                parsed.update(self._parser.parse(raw, shape))
        return _http(status, headers), parsed


def _parse_request(handler: DynamoHandler, operation: str, raw_body: bytes | str) -> Any:
    """The request's parameters as moto's stub would parse them. moto's parser walks the
    operation's shapes to turn binary values (base64 text) into bytes; without one (botocore
    validated the request against the same model, so every other member is plain JSON) the
    body's JSON is the same thing, at a tenth of the cost."""
    text = raw_body.decode() if isinstance(raw_body, bytes) else raw_body
    if not _BINARY_TYPE.search(text):
        return json.loads(text)
    return PROTOCOL_PARSERS["json"](
        _moto_operation(operation), map_type=handler.PROTOCOL_PARSER_MAP_TYPE
    ).parse(
        {
            "method": "POST",
            "values": MultiDict(),
            "headers": Headers(),
            "body": raw_body,
            "url_path": "/",
            "url_params": {},
        }
    )


def _http(status: int, headers: dict[str, str]) -> AWSResponse:
    return AWSResponse("http://dynamodb.local", status, HTTPHeaders.from_dict(headers), None)


def _run(handler: DynamoHandler, method: str) -> Answer:
    """The action method, and its result or error as moto's stub would answer them."""
    try:
        result = getattr(handler, method)()
    except ServiceException as error:
        result = ActionResult(error)
    except HTTPException as error:
        status = error.code or 500
        return status, dict(_JSON_HEADERS), str(error.description)
    except Exception as error:  # noqa: BLE001 - logged with its traceback by internal_error
        return internal_error(error)
    status, headers, body = handler.serialized(result)
    return int(status), dict(headers), body if isinstance(body, str) else body.decode()


def internal_error(error: Exception) -> Answer:
    """moto failed (an undefined name in an UpdateExpression reaches a KeyError in its
    validator): logged, and answered as DynamoDB answers its own failures, rather than raised
    into the caller."""
    log.error("moto failed on a DynamoDB request", exc_info=error)
    return 500, dict(_JSON_HEADERS), _INTERNAL_ERROR


@functools.cache
def _moto_operation(name: str) -> Any:
    return get_service_model("dynamodb").operation_model(name)


def _dispatch(model: Any, params: dict[str, Any], **_: Any) -> Any:
    active = InProcessDynamoDB._active
    if active is None or model.name not in DIRECT_OPERATIONS:
        return None  # moto's stub answers, as before
    return active.answer(model, params)
