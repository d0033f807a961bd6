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
from mxpush.errors import ConfigError, MxpushError
from mxpush.homeserver import MatrixClient
from mxpush.implicit import ImplicitRegistrations
from mxpush.outbound import OutboundHttp
from mxpush.scheduler import LambdaSenders, StepFunctionsScheduler
from mxpush.store import DynamoStore
from mxpush.urlsafety import TargetPolicy
from mxpush.vapid import VapidKey, WebPushKeyUnreadable, WebPushUnavailable, load_vapid_key

if TYPE_CHECKING:
    from mypy_boto3_lambda import LambdaClient
    from mypy_boto3_ssm import SSMClient
    from mypy_boto3_stepfunctions import SFNClient

    from mxpush.mailer import Mailer

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
    s = settings()
    return StepFunctionsScheduler(_sfn_client(), s.slot_machine_arn, s.retry_machine_arn)


@functools.cache
def senders() -> LambdaSenders:
    return LambdaSenders(_lambda_client(), settings().sender_functions)


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


# A failed SSM read is not kept for the container's life (hours, on a busy gateway): it is
# tried again on a later call, at most this often, so a throttled or briefly denied read heals
# by itself and a parameter created after the deploy is picked up.
SECRET_RETRY_SECONDS = 30.0

_parameters: dict[str, str | None] = {}
_parameter_failures: dict[str, tuple[float, ParameterUnreadable]] = {}


class ParameterUnreadable(MxpushError):
    """An SSM parameter could not be read. `transient` is false when it does not exist."""

    def __init__(self, code: str) -> None:
        super().__init__(f"cannot read the SSM parameter ({code})")
        self.transient = code != "ParameterNotFound"


def secure_parameter(name: str, purpose: str) -> str | None:
    """An SSM SecureString's value, kept for the warm container once read. Raises
    `ParameterUnreadable`; a failure is logged, and remembered for `SECRET_RETRY_SECONDS`."""
    if name in _parameters:
        return _parameters[name]
    failed = _parameter_failures.get(name)
    if failed and clock() < failed[0] + SECRET_RETRY_SECONDS:
        raise failed[1]
    try:
        response = _ssm_client().get_parameter(Name=name, WithDecryption=True)
    except (BotoCoreError, ClientError) as exc:
        code = type(exc).__name__
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code") or code)
        log.error(  # noqa: TRY400 - a configuration or AWS problem, not a bug: no traceback
            "%s unavailable: cannot read SSM parameter %s (%s); trying again in %d s",
            purpose,
            name,
            code,
            SECRET_RETRY_SECONDS,
        )
        error = ParameterUnreadable(code)
        _parameter_failures[name] = (clock(), error)
        raise error from None
    value = response.get("Parameter", {}).get("Value") or None
    _parameters[name] = value
    _parameter_failures.pop(name, None)
    return value


def admin_token() -> str | None:
    """The operator token: from the environment (local mode) or an SSM SecureString (AWS).
    None while it cannot be read: Matrix-token callers can still use the API meanwhile."""
    s = settings()
    if s.admin_token:
        return s.admin_token
    if not s.admin_token_parameter:
        return None
    try:
        return secure_parameter(s.admin_token_parameter, "operator token")
    except ParameterUnreadable:
        return None


def vapid_key() -> VapidKey:
    """The Web Push VAPID key: from the environment (local mode) or an SSM SecureString (AWS).
    Raises `WebPushUnavailable` (a 404 for API callers) when there is none, and
    `WebPushKeyUnreadable` (503) when it cannot be read just now; other features go on."""
    s = settings()
    private_key = s.vapid_private_key
    if not private_key and s.vapid_private_key_parameter:
        try:
            private_key = secure_parameter(s.vapid_private_key_parameter, "Web Push")
        except ParameterUnreadable as exc:
            if exc.transient:
                raise WebPushKeyUnreadable from None
            raise WebPushUnavailable("its VAPID private key cannot be read") from None
    loaded = _load_vapid_key(private_key, s.vapid_subject)
    if isinstance(loaded, str):
        raise WebPushUnavailable(loaded)
    return loaded


@functools.cache
def _load_vapid_key(private_key: str | None, subject: str | None) -> VapidKey | str:
    """The key, or why there is none (said once per container in the log)."""
    if not private_key:
        return "no VAPID private key is configured"
    if not subject:
        return "no VAPID subject (MXPUSH_VAPID_SUBJECT, a mailto: or https: contact) is configured"
    try:
        return load_vapid_key(private_key, subject)
    except ConfigError as exc:
        log.error("Web Push unavailable: %s", exc)  # noqa: TRY400 - configuration, not a bug
        return str(exc)


def mailer() -> Mailer:
    """The email transport: SMTP (`MXPUSH_SMTP_URL`) or Amazon SES (`MXPUSH_EMAIL_TRANSPORT=ses`,
    the deployed stack's setting), sending as `MXPUSH_EMAIL_FROM`. Raises `EmailUnavailable`
    when email is not configured (registering an email target answers 400 saying why)."""
    from mxpush.mailer import EmailUnavailable  # noqa: PLC0415 - only email pays for it

    s = settings()
    made = _mailer(
        s.email_transport,
        s.email_from,
        s.smtp_url,
        starttls=s.smtp_starttls,
        region=s.region,
        has_unsubscribe_key=bool(s.unsubscribe_secret or s.unsubscribe_secret_parameter),
    )
    if isinstance(made, str):
        raise EmailUnavailable(made)
    return made


@functools.cache
def _mailer(
    transport: str | None,
    sender: str | None,
    smtp_url: str | None,
    *,
    starttls: bool,
    region: str,
    has_unsubscribe_key: bool,
) -> Mailer | str:
    """The mailer, or why there is none (said once per container in the log)."""
    from mxpush.mailer import SesMailer, SmtpMailer, check_address, parse_smtp_url  # noqa: PLC0415

    transport = transport or ("smtp" if smtp_url else None)
    if transport is None:
        return (
            "no mail transport is configured (MXPUSH_SMTP_URL and MXPUSH_EMAIL_FROM, or on AWS "
            "the EmailFromAddress parameter for Amazon SES)"
        )
    if not sender:
        return "no sender address is configured (MXPUSH_EMAIL_FROM / EmailFromAddress)"
    from mxpush.mailer import envelope_address  # noqa: PLC0415

    try:
        check_address(envelope_address(sender))
    except ValueError as exc:
        log.error("email unavailable: MXPUSH_EMAIL_FROM %s", exc)  # noqa: TRY400 - configuration
        return f"the sender address (MXPUSH_EMAIL_FROM) {exc}"
    if not has_unsubscribe_key:
        return "no unsubscribe key is configured (MXPUSH_UNSUBSCRIBE_SECRET or its parameter)"
    if transport == "ses":
        return SesMailer(sender, region)
    if not smtp_url:
        return "MXPUSH_EMAIL_TRANSPORT is smtp but MXPUSH_SMTP_URL is not set"
    try:
        server = parse_smtp_url(smtp_url)
    except ConfigError as exc:
        log.error("email unavailable: %s", exc)  # noqa: TRY400 - configuration, not a bug
        return str(exc)
    return SmtpMailer(server, sender, starttls=starttls)


def unsubscribe_key() -> bytes:
    """The key of the emails' unsubscribe links: from the environment (local mode) or an SSM
    SecureString (AWS). Raises `EmailUnavailable` when there is none, `UnsubscribeKeyUnreadable`
    (503, or a transient failure for the sender) when it cannot be read just now."""
    from mxpush.mailer import EmailUnavailable  # noqa: PLC0415
    from mxpush.unsubscribe import UnsubscribeKeyUnreadable  # noqa: PLC0415

    s = settings()
    secret = s.unsubscribe_secret
    if not secret and s.unsubscribe_secret_parameter:
        try:
            secret = secure_parameter(s.unsubscribe_secret_parameter, "email unsubscribe links")
        except ParameterUnreadable as exc:
            if exc.transient:
                raise UnsubscribeKeyUnreadable from None
            raise EmailUnavailable("its unsubscribe key cannot be read") from None
    if not secret or len(secret) < 16:
        raise EmailUnavailable("no unsubscribe key (at least 16 characters) is configured")
    return secret.encode()


def reset() -> None:
    for cached in (
        settings,
        store,
        scheduler,
        senders,
        target_policy,
        implicit_registrations,
        outbound_http,
        matrix_client,
        _load_vapid_key,
        _mailer,
    ):
        cached.cache_clear()
    _parameters.clear()
    _parameter_failures.clear()


def _sfn_client() -> SFNClient:
    import boto3  # noqa: PLC0415 - only the functions that schedule pay for boto3
    from botocore.config import Config  # noqa: PLC0415

    config = Config(
        connect_timeout=2, read_timeout=5, retries={"max_attempts": 3, "mode": "standard"}
    )
    return boto3.client("stepfunctions", region_name=settings().region, config=config)


def _lambda_client() -> LambdaClient:
    import boto3  # noqa: PLC0415
    from botocore.config import Config  # noqa: PLC0415

    # An asynchronous invoke only queues the event: fail fast, Synapse may be waiting.
    config = Config(
        connect_timeout=2, read_timeout=5, retries={"max_attempts": 3, "mode": "standard"}
    )
    return boto3.client("lambda", region_name=settings().region, config=config)


def _ssm_client() -> SSMClient:
    import boto3  # noqa: PLC0415

    return boto3.client("ssm", region_name=settings().region)
