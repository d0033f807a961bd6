"""`/_matrix/push/v1/notify`: Synapse's notifications in, `{"rejected": [...]}` out.

Thin: parse the event, hand the notification to `mxpush.gateway`, shape the answer.
5xx only when the work could not be stored, so that Synapse retries (a push that is stored but
could not be scheduled is scheduled later by the slot's next batch or the sweep).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from mxpush import wiring
from mxpush.errors import ApiError, ServiceUnavailable, StoreUnavailable
from mxpush.gateway import handle_notification
from mxpush.http_api import Request, Router, error_response, json_response
from mxpush.notification import parse_notify_body

logger = Logger(service="mxpush")
router = Router()

# UnifiedPush clients probe the gateway with GET before using it.
DISCOVERY = {"unifiedpush": {"gateway": "matrix"}}


@router.route("POST", "/_matrix/push/v1/notify")
def notify(request: Request) -> dict[str, Any]:
    notification = parse_notify_body(request.body)
    try:
        rejected = handle_notification(
            notification,
            store=wiring.store(),
            scheduler=wiring.scheduler(),
            senders=wiring.senders(),
            default_delay=wiring.settings().default_delay_seconds,
            now=wiring.clock(),
            implicit=wiring.implicit_registrations(),
        )
    except StoreUnavailable as exc:
        logger.error("notification not accepted", extra={"reason": str(exc)})  # noqa: TRY400 - an outage, not a bug: no traceback
        raise ServiceUnavailable("could not accept the notification now; retry later") from None
    return json_response(200, {"rejected": rejected})


@router.route("GET", "/_matrix/push/v1/notify")
def discovery(request: Request) -> dict[str, Any]:
    return json_response(200, DISCOVERY)


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        return router.dispatch(Request.from_event(event))
    except ApiError as exc:
        return error_response(exc)
