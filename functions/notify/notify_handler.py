"""`/_matrix/push/v1/notify`: Synapse's notifications in, `{"rejected": [...]}` out.

Thin: parse the event, hand the notification to `mxpush.gateway`, shape the answer.
5xx only when the work could not be stored (503, so that Synapse retries; a push that is stored
but could not be scheduled is scheduled by the slot's next batch or the sweep), or for a bug
(500, logged with the request id): `mxpush.http_api.serve` answers every exception.
Metrics (`mxpush.metrics`): a disposition per device, and 4xx/5xx answers; flushed as EMF.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from mxpush import metrics, wiring
from mxpush.gateway import handle_notification
from mxpush.http_api import Request, Router, json_response, serve
from mxpush.notification import parse_notify_body

logger = Logger(service="mxpush")
router = Router()

# UnifiedPush clients probe the gateway with GET before using it.
DISCOVERY = {"unifiedpush": {"gateway": "matrix"}}


@router.route("POST", "/_matrix/push/v1/notify")
def notify(request: Request) -> dict[str, Any]:
    notification = parse_notify_body(request.body)
    rejected = handle_notification(
        notification,
        store=wiring.store(),
        scheduler=wiring.scheduler(),
        senders=wiring.senders(),
        default_delay=wiring.settings().default_delay_seconds,
        now=wiring.clock(),
        implicit=wiring.implicit_registrations(),
    )
    return json_response(200, {"rejected": rejected})


@router.route("GET", "/_matrix/push/v1/notify")
def discovery(request: Request) -> dict[str, Any]:
    return json_response(200, DISCOVERY)


@logger.inject_lambda_context(
    correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True
)
@metrics.flushed
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    response = serve(router, event)
    metrics.notify_error(int(response["statusCode"]))
    return response
