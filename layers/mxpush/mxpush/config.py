"""Settings read from the environment, once per container.

Local mode sets the same variables the SAM template sets on AWS, so the handlers cannot tell
the two apart.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from mxpush.errors import ConfigError

DEFAULT_DELAY_SECONDS = 25
MAX_DELAY_SECONDS = 3600
DEFAULT_LOG_RETENTION_DAYS = 7

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Settings:
    table_name: str
    # The slot state machine (delay, then delivery) and the retry one (failed first attempts).
    slot_machine_arn: str
    region: str
    retry_machine_arn: str = ""
    # Backend name -> its sender function (name or ARN), for asynchronous invokes.
    sender_functions: Mapping[str, str] = field(default_factory=dict)
    default_delay_seconds: int = DEFAULT_DELAY_SECONDS
    allowed_homeservers: tuple[str, ...] = ()
    allow_private_targets: bool = False
    # The operator token itself (local mode), or the name of an SSM SecureString holding it (AWS).
    admin_token: str | None = None
    admin_token_parameter: str | None = None
    # Base URL Synapse should use to reach this gateway; derived from the request when unset.
    public_url: str | None = None
    log_retention_days: int = DEFAULT_LOG_RETENTION_DAYS
    # Stateless UnifiedPush: app ID patterns and endpoint hosts the operator allows.
    unifiedpush_app_ids: tuple[str, ...] = ()
    unifiedpush_hosts: tuple[str, ...] = ()
    # Web Push: the VAPID private key itself (local mode), or the name of an SSM SecureString
    # holding it (AWS); and the contact push services see (mailto: or https:).
    vapid_private_key: str | None = field(default=None, repr=False)
    vapid_private_key_parameter: str | None = None
    vapid_subject: str | None = None
    # Email: the sender address (`From`), the transport (`ses`, `smtp`; empty = SMTP when
    # `smtp_url` is set, else none: email disabled), the SMTP server as a URL (its password is
    # in it: never shown), and whether to upgrade with STARTTLS when the server offers it.
    email_from: str | None = None
    email_transport: str | None = None
    smtp_url: str | None = field(default=None, repr=False)
    smtp_starttls: bool = True
    # The key of the signed unsubscribe links in emails: itself (local mode), or the name of an
    # SSM SecureString holding it (AWS).
    unsubscribe_secret: str | None = field(default=None, repr=False)
    unsubscribe_secret_parameter: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            table_name=env.get("MXPUSH_TABLE_NAME", "mxpush"),
            slot_machine_arn=env.get("MXPUSH_SLOT_MACHINE_ARN", ""),
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            retry_machine_arn=env.get("MXPUSH_RETRY_MACHINE_ARN", ""),
            sender_functions=_functions(env.get("MXPUSH_SENDER_FUNCTIONS", "")),
            default_delay_seconds=int_setting(
                env, "MXPUSH_DELAY_SECONDS", DEFAULT_DELAY_SECONDS, 0, MAX_DELAY_SECONDS
            ),
            allowed_homeservers=parse_homeservers(env.get("MXPUSH_ALLOWED_HOMESERVERS", "")),
            allow_private_targets=_bool(env, "MXPUSH_ALLOW_PRIVATE_TARGETS", default=False),
            admin_token=env.get("MXPUSH_ADMIN_TOKEN") or None,
            admin_token_parameter=env.get("MXPUSH_ADMIN_TOKEN_PARAMETER") or None,
            public_url=_public_url(env.get("MXPUSH_PUBLIC_URL", "")),
            log_retention_days=int_setting(
                env, "MXPUSH_LOG_RETENTION_DAYS", DEFAULT_LOG_RETENTION_DAYS, 1, 365
            ),
            unifiedpush_app_ids=_list(env.get("MXPUSH_UNIFIEDPUSH_APP_IDS", "")),
            unifiedpush_hosts=_list(env.get("MXPUSH_UNIFIEDPUSH_HOSTS", "")),
            vapid_private_key=env.get("MXPUSH_VAPID_PRIVATE_KEY", "").strip() or None,
            vapid_private_key_parameter=env.get("MXPUSH_VAPID_PRIVATE_KEY_PARAMETER") or None,
            vapid_subject=env.get("MXPUSH_VAPID_SUBJECT", "").strip() or None,
            email_from=env.get("MXPUSH_EMAIL_FROM", "").strip() or None,
            email_transport=_email_transport(env.get("MXPUSH_EMAIL_TRANSPORT", "")),
            smtp_url=env.get("MXPUSH_SMTP_URL", "").strip() or None,
            smtp_starttls=_bool(env, "MXPUSH_SMTP_STARTTLS", default=True),
            unsubscribe_secret=env.get("MXPUSH_UNSUBSCRIBE_SECRET", "").strip() or None,
            unsubscribe_secret_parameter=env.get("MXPUSH_UNSUBSCRIBE_SECRET_PARAMETER") or None,
        )


def normalize_base_url(url: str) -> str:
    """`HTTPS://Matrix.Example.org/` -> `https://matrix.example.org` (for exact comparisons)."""
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) base URL: {url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"a base URL has no query or fragment: {url!r}")
    path = parts.path.rstrip("/")
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{path}"


def parse_homeservers(value: str) -> tuple[str, ...]:
    result: list[str] = []
    for raw in value.split(","):
        if not raw.strip():
            continue
        try:
            result.append(normalize_base_url(raw))
        except ValueError as exc:
            raise ConfigError(f"MXPUSH_ALLOWED_HOMESERVERS: {exc}") from exc
    return tuple(result)


def _public_url(value: str) -> str | None:
    if not value.strip():
        return None
    try:
        return normalize_base_url(value)
    except ValueError as exc:
        raise ConfigError(f"MXPUSH_PUBLIC_URL: {exc}") from exc


def _functions(value: str) -> dict[str, str]:
    from mxpush.scheduler import parse_functions  # noqa: PLC0415 - botocore only when used

    try:
        return parse_functions(value)
    except ValueError as exc:
        raise ConfigError(f"MXPUSH_SENDER_FUNCTIONS: {exc}") from None


def _email_transport(value: str) -> str | None:
    transport = value.strip().lower()
    if transport not in ("", "ses", "smtp"):
        raise ConfigError(f"MXPUSH_EMAIL_TRANSPORT must be ses or smtp, got {value!r}")
    return transport or None


def _list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def int_setting(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """An integer variable; the error names it (`int()`'s own error does not say which one)."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")
