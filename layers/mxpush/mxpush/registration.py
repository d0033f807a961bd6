"""The registration API's domain: register a backend target, list, get, delete, test, log.

Callers are the operator (sees everything) or Matrix users (see only their own registrations;
someone else's pushkey answers 404, as if it did not exist).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from mxpush.auth import Caller
from mxpush.backends import BACKENDS
from mxpush.backends.base import Backend, Rejected
from mxpush.config import MAX_DELAY_SECONDS, Settings, normalize_base_url
from mxpush.errors import (
    InvalidParam,
    MissingParam,
    NotFound,
    OutboundError,
    PermanentDeliveryError,
    TransientDeliveryError,
    UpstreamFailed,
)
from mxpush.homeserver import MatrixClient
from mxpush.ids import log_ref, new_pushkey, registration_id
from mxpush.model import (
    Channel,
    ChannelHealth,
    DeliveryRecord,
    Mode,
    Outcome,
    Registration,
    RegistrationOptions,
    iso_time,
)
from mxpush.notification import MAX_APP_ID_CHARS, MAX_PUSHKEY_BYTES
from mxpush.outbound import OutboundHttp
from mxpush.render import check_click_url_template, render_test
from mxpush.store import ClaimTaken, Removed
from mxpush.urlsafety import TargetPolicy

log = logging.getLogger(__name__)

NOTIFY_PATH = "/_matrix/push/v1/notify"
_TOP_LEVEL_FIELDS = frozenset(
    {"backend", "target", "delay_seconds", "homeserver", "pusher", "options", "channels", "mode"}
)
_CHANNEL_FIELDS = frozenset(
    {"backend", "target", "options", "after_seconds", "give_up_after_seconds"}
)
# A registration's channels (README, "Channels"): a few ways to reach one person.
MAX_CHANNELS = 5
# An escalation waits at most a day; a channel gives up after at most a day of failures.
MAX_AFTER_SECONDS = 86400
MAX_GIVE_UP_SECONDS = 86400
_PUSHER_FIELDS = frozenset(
    {"app_id", "app_display_name", "device_display_name", "lang", "format", "append", "profile_tag"}
)
_OPTION_FIELDS = frozenset(
    {"click_url", "priority", "markdown", "include_content", "retract", "group_by_room"}
)
MAX_DELIVERY_ENTRIES = 100


class RegistrationStore(Protocol):
    def create_registration(self, registration: Registration) -> None: ...

    def get_registration(self, rid: str) -> Registration | None: ...

    def list_registrations(self, owner: str | None) -> list[Registration]: ...

    def delete_registration(self, rid: str) -> Removed | None: ...

    def list_deliveries(
        self, rid: str, *, now: float, limit: int = 100
    ) -> list[DeliveryRecord]: ...

    def log_delivery(self, rid: str, record: DeliveryRecord) -> None: ...

    def mark_rejected(self, rid: str, *, reason: str, now: float) -> None: ...

    def reject_channel(self, rid: str, channel: int, *, reason: str, now: float) -> bool: ...

    def channel_health(self, rid: str, *, now: float) -> dict[int, ChannelHealth]: ...


@dataclass(frozen=True)
class RegistrationContext:
    store: RegistrationStore
    matrix: MatrixClient
    http: OutboundHttp
    policy: TargetPolicy
    settings: Settings
    clock: Callable[[], float]


@dataclass(frozen=True)
class TestResult:
    outcome: Outcome
    reason: str | None = None


# --- Register -----------------------------------------------------------------------------------


def register(
    body: Any, caller: Caller, ctx: RegistrationContext, *, gateway_url: str
) -> dict[str, Any]:
    """Validate and store a registration; set the pusher on the homeserver when asked."""
    if not isinstance(body, dict):
        raise InvalidParam("body: must be a JSON object")
    warnings = [
        f"{key}: unknown field, ignored" for key in sorted(body) if key not in _TOP_LEVEL_FIELDS
    ]

    channels, mode, channel_warnings = _channels(body, ctx.policy)
    warnings += channel_warnings
    first = channels[0]
    backend = BACKENDS[first.backend]
    delay = _delay(body.get("delay_seconds"))
    homeserver = _homeserver(body.get("homeserver"), caller)

    pushkey = new_pushkey()
    pusher_request = body.get("pusher")
    pusher, pusher_warnings = build_pusher(
        pusher_request, backend, pushkey=pushkey, notify_url=gateway_url + NOTIFY_PATH
    )
    warnings += pusher_warnings
    will_register = pusher_request is not None and not caller.operator
    if pusher_request is not None and caller.operator:
        warnings.append(
            "pusher: not registered on a homeserver (the operator token is not a Matrix "
            "token); send the returned 'pusher' to /_matrix/client/v3/pushers/set yourself"
        )

    registration = Registration(
        rid=registration_id(pushkey),
        pushkey=pushkey,
        backend=backend.name,
        target=first.target,
        app_id=str(pusher["app_id"]),
        owner=caller.owner,
        created_at=ctx.clock(),
        delay_seconds=delay,
        options=first.options,
        homeserver=homeserver,
        pusher=pusher,
        pusher_registered=will_register,
        claim=backend.claim(first.target),
        more_channels=channels[1:],
        mode=mode,
        give_up_after_seconds=first.give_up_after_seconds,
    )
    try:
        ctx.store.create_registration(registration)
    except ClaimTaken:
        raise InvalidParam(
            f"target.{backend.claim_field}: you already have a {backend.name!r} registration "
            "with this value; update or delete that one"
        ) from None
    if will_register and caller.homeserver and caller.access_token:
        try:
            ctx.matrix.set_pusher(caller.homeserver, caller.access_token, pusher)
        except UpstreamFailed:
            # Do not leave a registration behind that the user believes failed.
            ctx.store.delete_registration(registration.rid)
            raise
    log.info(
        "registered",
        extra={
            "pushkey": log_ref(registration.rid),
            "backend": backend.name,
            "pusher_registered": will_register,
        },
    )
    answer: dict[str, Any] = {
        "pushkey": pushkey,
        "app_id": registration.app_id,
        "pusher": pusher,
        "pusher_registered": will_register,
    }
    if warnings:
        answer["warnings"] = warnings
    return answer


def build_pusher(
    request: Any, backend: Backend, *, pushkey: str, notify_url: str
) -> tuple[dict[str, Any], list[str]]:
    """The exact body for `/_matrix/client/v3/pushers/set`, with `data.url` at this gateway."""
    if request is None:
        request = {}
    if not isinstance(request, dict):
        raise InvalidParam("pusher: must be an object")
    warnings = [
        f"pusher.{key}: unknown field, ignored"
        for key in sorted(request)
        if key not in _PUSHER_FIELDS
    ]
    app_id = _optional_str(request, "pusher.app_id", "app_id") or backend.default_app_id
    if len(app_id) > MAX_APP_ID_CHARS:
        raise InvalidParam(f"pusher.app_id: must be at most {MAX_APP_ID_CHARS} characters")
    data: dict[str, Any] = {"url": notify_url}
    fmt = request.get("format")
    if fmt is not None:
        if fmt != "event_id_only":
            raise InvalidParam('pusher.format: the only format is "event_id_only"')
        data["format"] = fmt
    append = request.get("append", False)
    if not isinstance(append, bool):
        raise InvalidParam("pusher.append: must be a boolean")
    pusher: dict[str, Any] = {
        "kind": "http",
        "app_id": app_id,
        "pushkey": pushkey,
        "app_display_name": _optional_str(request, "pusher.app_display_name", "app_display_name")
        or "mxpush",
        "device_display_name": _optional_str(
            request, "pusher.device_display_name", "device_display_name"
        )
        or f"mxpush ({backend.display_name})",
        "lang": _optional_str(request, "pusher.lang", "lang") or "en",
        "data": data,
        "append": append,
    }
    profile_tag = _optional_str(request, "pusher.profile_tag", "profile_tag")
    if profile_tag:
        pusher["profile_tag"] = profile_tag
    return pusher, warnings


# --- Read, delete, test -------------------------------------------------------------------------


def list_registrations(caller: Caller, ctx: RegistrationContext) -> dict[str, Any]:
    owner = None if caller.operator else caller.owner
    registrations = ctx.store.list_registrations(owner)
    return {"pushkeys": [describe(r, ctx.settings, ctx.store) for r in registrations]}


def get_registration(pushkey: str, caller: Caller, ctx: RegistrationContext) -> Registration:
    if not pushkey or len(pushkey.encode("utf-8")) > MAX_PUSHKEY_BYTES:
        raise NotFound("no such pushkey")
    registration = ctx.store.get_registration(registration_id(pushkey))
    if registration is None or not caller.may_see(registration.owner):
        raise NotFound("no such pushkey")
    return registration


def describe(
    registration: Registration, settings: Settings, store: RegistrationStore | None = None
) -> dict[str, Any]:
    """A registration as the API shows it: secrets masked; with `store`, each channel's health
    from its delivery log (one Query)."""
    view: dict[str, Any] = {
        "pushkey": registration.pushkey,
        "backend": registration.backend,
        "target": _masked(registration.backend, registration.target),
        "app_id": registration.app_id,
        "delay_seconds": registration.delay_seconds,
        "effective_delay_seconds": registration.effective_delay(settings.default_delay_seconds),
        "options": registration.options.to_item(),
        "owner": registration.owner,
        "homeserver": registration.homeserver,
        "pusher_registered": registration.pusher_registered,
        "status": registration.status.value,
        "created": iso_time(registration.created_at),
        "mode": registration.mode.value,
    }
    if registration.status_reason:
        view["status_reason"] = registration.status_reason
    health = store.channel_health(registration.rid, now=time.time()) if store else {}
    channels = []
    for index, channel in enumerate(registration.channels):
        shown: dict[str, Any] = {
            "backend": channel.backend,
            "target": _masked(channel.backend, channel.target),
            "options": channel.options.to_item(),
            "after_seconds": channel.after_seconds,
            "give_up_after_seconds": channel.give_up_after_seconds,
        }
        state = health.get(index, ChannelHealth())
        rejection = registration.rejected_channels.get(index)
        rejected = registration.channel_rejected(index)
        shown["health"] = state.describe(
            rejected=rejected,
            rejected_reason=rejection.reason if rejection else registration.status_reason,
            rejected_at=rejection.at if rejection else registration.status_at,
        )
        channels.append(shown)
    view["channels"] = channels
    return view


def _masked(backend_name: str, target: Mapping[str, Any]) -> dict[str, Any]:
    backend = BACKENDS.get(backend_name)
    return backend.mask_target(target) if backend else dict.fromkeys(target, "****")


def unregister(pushkey: str, caller: Caller, ctx: RegistrationContext) -> list[str]:
    """Delete a registration (its pending pushes go with it: their senders find them gone),
    and remove the pusher the gateway set.

    Returns warnings (the pusher could not be removed). Without the user's Matrix token the
    pusher stays until Synapse's next notification, which is answered `rejected`; Synapse then
    deletes it itself.
    """
    registration = get_registration(pushkey, caller, ctx)
    removed = ctx.store.delete_registration(registration.rid)
    if removed is None:
        raise NotFound("no such pushkey")
    warnings: list[str] = []
    if registration.pusher_registered:
        if caller.access_token and caller.homeserver == registration.homeserver:
            try:
                ctx.matrix.remove_pusher(
                    str(caller.homeserver), caller.access_token, registration.app_id, pushkey
                )
            except UpstreamFailed as exc:
                warnings.append(f"pusher: could not be removed from the homeserver ({exc})")
        else:
            warnings.append(
                "pusher: left on the homeserver (no Matrix token of its owner); Synapse "
                "deletes it at its next notification, which is answered 'rejected'"
            )
    log.info("unregistered", extra={"pushkey": log_ref(registration.rid)})
    return warnings


def send_test_push(pushkey: str, caller: Caller, ctx: RegistrationContext) -> TestResult:
    """Push a test message now, synchronously, and log it."""
    registration = get_registration(pushkey, caller, ctx)
    backend = BACKENDS.get(registration.backend)
    if backend is None:
        raise InvalidParam(f"backend {registration.backend!r} is no longer available")
    now = ctx.clock()
    try:
        result = backend.send_to(render_test(), registration, ctx.http)
    except (TransientDeliveryError, PermanentDeliveryError) as exc:
        outcome = TestResult(Outcome.FAILED, exc.reason)
    except OutboundError as exc:
        outcome = TestResult(Outcome.FAILED, str(exc))
    else:
        if isinstance(result, Rejected):
            outcome = TestResult(Outcome.REJECTED, result.reason)
            # The first channel's (the test push goes to the first channel).
            ctx.store.reject_channel(registration.rid, 0, reason=result.reason, now=now)
        else:
            outcome = TestResult(Outcome.DELIVERED)
    reason = "test push" + (f": {outcome.reason}" if outcome.reason else "")
    ctx.store.log_delivery(
        registration.rid,
        DeliveryRecord(now, outcome.outcome, (), reason, batch_id=f"test{int(now * 1000)}"),
    )
    return outcome


def list_deliveries(pushkey: str, caller: Caller, ctx: RegistrationContext) -> dict[str, Any]:
    registration = get_registration(pushkey, caller, ctx)
    records = ctx.store.list_deliveries(
        registration.rid, now=ctx.clock(), limit=MAX_DELIVERY_ENTRIES
    )
    entries: list[dict[str, Any]] = []
    for record in records:
        entries += record.entries()
    return {
        "status": registration.status.value,
        "deliveries": entries[:MAX_DELIVERY_ENTRIES],
    }


# --- Field validation ---------------------------------------------------------------------------


def _channels(
    body: Mapping[str, Any], policy: TargetPolicy
) -> tuple[tuple[Channel, ...], Mode, list[str]]:
    """The registration's channels: `backend` + `target` (+ `options`) is one channel;
    `channels` is a list of them (`options` at the top level is then every channel's default).
    Raises naming the field (`channels[1].target.url: ...`)."""
    mode = _mode(body.get("mode"))
    raw = body.get("channels")
    if raw is None:
        if body.get("mode") is not None:
            raise InvalidParam("mode: only with channels")
        backend = _backend(body.get("backend"))
        checked = backend.validate_target(_required(body, "target"), policy)
        options, option_warnings = _options(body.get("options"), backend, checked.target)
        channel = Channel(backend.name, checked.target, options)
        return (channel,), mode, [*checked.warnings, *option_warnings]
    for key in ("backend", "target"):
        if body.get(key) is not None:
            raise InvalidParam(f"{key}: give either backend and target, or channels")
    if not isinstance(raw, list):
        raise InvalidParam("channels: must be a list of channels")
    if not 1 <= len(raw) <= MAX_CHANNELS:
        raise InvalidParam(f"channels: must hold 1 to {MAX_CHANNELS} channels")
    channels: list[Channel] = []
    warnings: list[str] = []
    for index, value in enumerate(raw):
        where = f"channels[{index}]"
        if not isinstance(value, dict):
            raise InvalidParam(f"{where}: must be an object with backend and target")
        name = value.get("backend")
        claimed = BACKENDS.get(name) if isinstance(name, str) else None
        if index > 0 and claimed is not None and claimed.claim_field:
            raise InvalidParam(
                f"{where}.backend: {claimed.name!r} can only be the first channel (its "
                f"target.{claimed.claim_field} names the registration)"
            )
        try:
            channel, found = _channel(value, body.get("options"), policy)
        except (InvalidParam, MissingParam) as exc:
            raise type(exc)(f"{where}.{exc.error}") from None
        warnings += [f"{where}.{warning}" for warning in found]
        if index == 0 and channel.after_seconds:
            raise InvalidParam(f"{where}.after_seconds: the first channel is sent first; must be 0")
        if mode is Mode.ALL and channel.after_seconds:
            raise InvalidParam(f'{where}.after_seconds: only in mode "fallback" (escalation)')
        channels.append(channel)
    return tuple(channels), mode, warnings


def _channel(value: Any, default_options: Any, policy: TargetPolicy) -> tuple[Channel, list[str]]:
    """One channel; errors and warnings name fields relative to it."""
    if not isinstance(value, dict):
        raise InvalidParam("must be an object with backend and target")
    warnings = [
        f"{key}: unknown field, ignored" for key in sorted(value) if key not in _CHANNEL_FIELDS
    ]
    backend = _backend(value.get("backend"))
    checked = backend.validate_target(_required(value, "target"), policy)
    warnings += checked.warnings
    raw_options = value.get("options", default_options)
    options, option_warnings = _options(raw_options, backend, checked.target)
    warnings += option_warnings
    after = _seconds(value.get("after_seconds"), "after_seconds", MAX_AFTER_SECONDS) or 0
    give_up = _seconds(
        value.get("give_up_after_seconds"), "give_up_after_seconds", MAX_GIVE_UP_SECONDS
    )
    return Channel(backend.name, checked.target, options, after, give_up), warnings


def _mode(value: Any) -> Mode:
    if value is None:
        return Mode.FALLBACK
    if not isinstance(value, str) or value not in {m.value for m in Mode}:
        raise InvalidParam('mode: must be "fallback" or "all"')
    return Mode(value)


def _seconds(value: Any, name: str, limit: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidParam(f"{name}: must be an integer")
    if not 0 <= value <= limit:
        raise InvalidParam(f"{name}: must be between 0 and {limit}")
    return value


def _required(body: Mapping[str, Any], key: str) -> Any:
    if body.get(key) is None:
        raise MissingParam(f"{key}: required")
    return body[key]


def _backend(value: Any) -> Backend:
    if value is None:
        raise MissingParam("backend: required")
    if not isinstance(value, str) or value not in BACKENDS:
        known = ", ".join(sorted(BACKENDS))
        raise InvalidParam(f"backend: unknown backend {value!r} (known: {known})")
    return BACKENDS[value]


def _delay(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidParam("delay_seconds: must be an integer")
    if not 0 <= value <= MAX_DELAY_SECONDS:
        raise InvalidParam(f"delay_seconds: must be between 0 and {MAX_DELAY_SECONDS}")
    return value


def _options(
    value: Any, backend: Backend, target: Mapping[str, Any]
) -> tuple[RegistrationOptions, list[str]]:
    if value is None:
        return RegistrationOptions(), []
    if not isinstance(value, dict):
        raise InvalidParam("options: must be an object")
    warnings = [
        f"options.{key}: unknown field, ignored"
        for key in sorted(value)
        if key not in _OPTION_FIELDS
    ]
    click = value.get("click_url")
    if click is not None:
        if not isinstance(click, str):
            raise InvalidParam("options.click_url: must be a string")
        try:
            check_click_url_template(click)
        except ValueError as exc:
            raise InvalidParam(f"options.click_url: {exc}") from None
    priority = value.get("priority") or {}
    if not isinstance(priority, dict):
        raise InvalidParam("options.priority: must be an object")
    for key in ("markdown", "include_content", "retract", "group_by_room"):
        if key in value and not isinstance(value[key], bool):
            raise InvalidParam(f"options.{key}: must be a boolean")
    warnings += [
        f"options.{key}: not supported by backend {backend.name!r}, ignored"
        for key in sorted(backend.ignored_options)
        if value.get(key) not in (None, False)
    ]
    options = RegistrationOptions(
        click_url=click,
        priority=backend.validate_priority(priority),
        markdown=value.get("markdown", False),
        include_content=value.get("include_content", True),
        retract=value.get("retract", True),
        group_by_room=value.get("group_by_room", True),
    )
    if value.get("retract") is True and not backend.can_retract(target):
        warnings.append(
            f"options.retract: backend {backend.name!r} cannot take back a delivered push"
            + (" without target.client_token" if backend.name == "gotify" else "")
            + "; a read changes nothing there"
        )
    return options, warnings


def _homeserver(value: Any, caller: Caller) -> str | None:
    if value is None:
        return caller.homeserver
    if not isinstance(value, str):
        raise InvalidParam("homeserver: must be a string")
    try:
        homeserver = normalize_base_url(value)
    except ValueError:
        raise InvalidParam("homeserver: must be an http(s) base URL") from None
    if caller.homeserver is not None and homeserver != caller.homeserver:
        raise InvalidParam("homeserver: must be the homeserver your access token belongs to")
    return homeserver


def _optional_str(request: Mapping[str, Any], where: str, key: str) -> str | None:
    value = request.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidParam(f"{where}: must be a non-empty string")
    if len(value) > 256:
        raise InvalidParam(f"{where}: must be at most 256 characters")
    return value
