"""Dependencies for the handlers, created on first use and kept for the warm container.

Nothing here runs at import time: a handler module imports this cheaply, and tests or local
mode can start moto first. `reset()` drops everything (tests, local mode restarts).
"""

from __future__ import annotations

import functools
import logging
import time
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from mxpush.config import Settings
from mxpush.errors import ConfigError
from mxpush.homeserver import MatrixClient
from mxpush.implicit import ImplicitRegistrations
from mxpush.outbound import OutboundHttp
from mxpush.scheduler import StepFunctionsScheduler
from mxpush.store import DynamoStore
from mxpush.urlsafety import TargetPolicy
from mxpush.vapid import VapidKey, WebPushUnavailable, load_vapid_key

if TYPE_CHECKING:
    from mypy_boto3_ssm import SSMClient
    from mypy_boto3_stepfunctions import SFNClient

log = logging.getLogger(__name__)


def clock() -> float:
    return time.time()


@functools.cache
def settings() -> Settings:
    return Settings.from_env()


@functools.cache
def store() -> DynamoStore:
    s = settings()
    return DynamoStore(s.table_name, s.region, log_retention_days=s.log_retention_days)


@functools.cache
def scheduler() -> StepFunctionsScheduler:
    return StepFunctionsScheduler(_sfn_client(), settings().state_machine_arn)


@functools.cache
def target_policy() -> TargetPolicy:
    return TargetPolicy(allow_private=settings().allow_private_targets)


@functools.cache
def implicit_registrations() -> ImplicitRegistrations:
    s = settings()
    return ImplicitRegistrations(
        app_id_patterns=s.unifiedpush_app_ids,
        hosts=s.unifiedpush_hosts,
        allow_http=s.allow_private_targets,
    )


@functools.cache
def outbound_http() -> OutboundHttp:
    """For backend targets: users' URLs, under the target policy."""
    return OutboundHttp(target_policy())


@functools.cache
def matrix_client() -> MatrixClient:
    """For homeservers: the operator's URLs, which may be private."""
    return MatrixClient(OutboundHttp(TargetPolicy(allow_private=True)), clock=clock)


@functools.cache
def admin_token() -> str | None:
    """The operator token: from the environment (local mode) or an SSM SecureString (AWS)."""
    s = settings()
    if s.admin_token:
        return s.admin_token
    if not s.admin_token_parameter:
        return None
    try:
        response = _ssm_client().get_parameter(Name=s.admin_token_parameter, WithDecryption=True)
    except (BotoCoreError, ClientError) as exc:
        # Matrix-token callers can still use the API; say once per container why the
        # operator token does not work.
        log.error(  # noqa: TRY400 - a configuration problem, not a bug: no traceback
            "operator token unavailable: cannot read SSM parameter %s (%s)",
            s.admin_token_parameter,
            type(exc).__name__,
        )
        return None
    value = response.get("Parameter", {}).get("Value")
    return value or None


def vapid_key() -> VapidKey:
    """The Web Push VAPID key: from the environment (local mode) or an SSM SecureString (AWS).
    Raises `WebPushUnavailable` (a 404 for API callers) when there is none; other features go on."""
    loaded = _vapid_key()
    if isinstance(loaded, str):
        raise WebPushUnavailable(loaded)
    return loaded


@functools.cache
def _vapid_key() -> VapidKey | str:
    """The key, or why there is none (said once per container in the log)."""
    s = settings()
    private_key = s.vapid_private_key
    if not private_key and s.vapid_private_key_parameter:
        try:
            response = _ssm_client().get_parameter(
                Name=s.vapid_private_key_parameter, WithDecryption=True
            )
        except (BotoCoreError, ClientError) as exc:
            log.error(  # noqa: TRY400 - a configuration problem, not a bug: no traceback
                "Web Push unavailable: cannot read SSM parameter %s (%s)",
                s.vapid_private_key_parameter,
                type(exc).__name__,
            )
            return "its VAPID private key cannot be read"
        private_key = response.get("Parameter", {}).get("Value")
    if not private_key:
        return "no VAPID private key is configured"
    if not s.vapid_subject:
        return "no VAPID subject (MXPUSH_VAPID_SUBJECT, a mailto: or https: contact) is configured"
    try:
        return load_vapid_key(private_key, s.vapid_subject)
    except ConfigError as exc:
        log.error("Web Push unavailable: %s", exc)  # noqa: TRY400 - configuration, not a bug
        return str(exc)


def reset() -> None:
    for cached in (
        settings,
        store,
        scheduler,
        target_policy,
        implicit_registrations,
        outbound_http,
        matrix_client,
        admin_token,
        _vapid_key,
    ):
        cached.cache_clear()


def _sfn_client() -> SFNClient:
    import boto3  # noqa: PLC0415 - only the functions that schedule pay for boto3
    from botocore.config import Config  # noqa: PLC0415

    config = Config(
        connect_timeout=2, read_timeout=5, retries={"max_attempts": 3, "mode": "standard"}
    )
    return boto3.client("stepfunctions", region_name=settings().region, config=config)


def _ssm_client() -> SSMClient:
    import boto3  # noqa: PLC0415

    return boto3.client("ssm", region_name=settings().region)
