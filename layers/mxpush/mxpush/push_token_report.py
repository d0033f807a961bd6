"""`POST /api/client/push_token_report`: the Acrobits Push Token Reporter, as matrix2acrobits
serves it, so a softphone provisioned for matrix2acrobits can report its tokens to mxpush.

Body (the reporter's JSON, https://doc.acrobits.net/api/client/push_token_reporter.html):
`{"selector", "token_msgs", "appid_msgs", "token_calls"?, "appid_calls"?}`. matrix2acrobits
parses `appid_msgs`/`appid_calls`; its documentation spells them `app_id_msgs`/`app_id_calls`:
both are accepted. mxpush also takes `url` (another PNM endpoint; the reporter's template can
carry it) and `homeserver` (which homeserver a Matrix token belongs to). The softphone reports
at every start, so a report is usually a repeat.

Per caller (owner) and selector there is exactly one Acrobits registration:

- the first report creates it, with a fresh pushkey and a pusher as matrix2acrobits registers
  it (`app_id` = `appid_msgs`, `append: false`, `data.format: "event_id_only"`);
- a later report updates its tokens **in place**: the pushkey stays, so the pusher on the
  homeserver, pending pushes and the delivery log stay valid across token rotations. A report
  also makes a rejected registration active again: the softphone that just reported is alive
  with these tokens.

When the caller used a Matrix token, every report (re)sets the pusher with `pushers/set`: it is
idempotent, and restores a pusher the homeserver deleted after a `rejected` answer. The operator
token is not a Matrix token: the answer then carries the pusher for the operator to set.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from mxpush.auth import Caller
from mxpush.backends.acrobits import AcrobitsBackend
from mxpush.errors import InvalidParam, MissingParam, ServiceUnavailable, UpstreamFailed
from mxpush.homeserver import MatrixClient
from mxpush.ids import log_ref, new_pushkey, registration_id
from mxpush.model import Registration
from mxpush.notification import MAX_APP_ID_CHARS
from mxpush.registration import NOTIFY_PATH, build_pusher
from mxpush.store import ClaimTaken, Removed
from mxpush.urlsafety import TargetPolicy

log = logging.getLogger(__name__)

BACKEND = AcrobitsBackend()
# The pusher matrix2acrobits registers (service/messages.go, ReportPushToken).
DEVICE_DISPLAY_NAME = "Acrobits Softphone"
_KNOWN_FIELDS = frozenset(
    {
        "selector",
        "token_msgs",
        "appid_msgs",
        "app_id_msgs",
        "token_calls",
        "appid_calls",
        "app_id_calls",
        "homeserver",
        "url",
    }
)
_CALL_FIELDS = ("calls_device_token", "calls_app_id")
_MAX_TOKEN_CHARS = 512


class ReportStore(Protocol):
    def find_claimed(self, backend: str, owner: str, claim: str) -> str | None: ...

    def create_registration(self, registration: Registration) -> None: ...

    def update_target(
        self,
        rid: str,
        *,
        claim: str,
        set_fields: Mapping[str, Any],
        remove_fields: Iterable[str] = (),
        pusher_registered: bool | None = None,
    ) -> Registration | None: ...

    def release_claim(self, backend: str, owner: str, claim: str, rid: str) -> None: ...

    def delete_registration(self, rid: str) -> Removed | None: ...


def report_push_token(
    body: Any,
    caller: Caller,
    *,
    store: ReportStore,
    matrix: MatrixClient,
    policy: TargetPolicy,
    clock: Callable[[], float],
    gateway_url: str,
) -> dict[str, Any]:
    """Create or update the caller's Acrobits registration for the reported selector."""
    if not isinstance(body, dict):
        raise InvalidParam("body: must be a JSON object")
    warnings = [
        f"{key}: unknown field, ignored" for key in sorted(body) if key not in _KNOWN_FIELDS
    ]
    target = _reported_target(body)
    url = body.get("url")
    if url is not None:
        target["url"] = url
    # Validates exactly as a registration through the API would (and adds the default URL).
    # The tokens passed `_reported_target` already: only `url` can fail here.
    try:
        checked = BACKEND.validate_target(target, policy).target
    except InvalidParam as exc:
        raise InvalidParam(exc.error.removeprefix("target.")) from None
    selector = str(checked["selector"])
    will_register = not caller.operator

    for _ in range(2):
        rid = store.find_claimed(BACKEND.name, caller.owner, selector)
        if rid is not None:
            updated = store.update_target(
                rid,
                claim=selector,
                # Without a reported URL a registration keeps its own.
                set_fields={k: v for k, v in checked.items() if k != "url" or url is not None},
                remove_fields=[k for k in _CALL_FIELDS if k not in checked],
                pusher_registered=True if will_register else None,
            )
            if updated is not None:
                pusher = dict(updated.pusher or {})
                if will_register:
                    # If this fails (502), the new tokens stay: they are right, and the
                    # softphone's next report sets the pusher again.
                    _set_pusher(matrix, caller, pusher)
                log.info("push token report", extra={"pushkey": log_ref(rid), "new": False})
                return _answer(updated, pusher, created=False, caller=caller, warnings=warnings)
            # The claim outlived its registration (an interrupted delete): free it.
            store.release_claim(BACKEND.name, caller.owner, selector, rid)
        try:
            registration = _create(
                checked, caller, store=store, clock=clock, gateway_url=gateway_url
            )
        except ClaimTaken:
            continue  # a concurrent report created it: update that one
        pusher = dict(registration.pusher or {})
        if will_register:
            try:
                _set_pusher(matrix, caller, pusher)
            except UpstreamFailed:
                # Do not leave a registration behind that the softphone believes failed.
                store.delete_registration(registration.rid)
                raise
        log.info("push token report", extra={"pushkey": log_ref(registration.rid), "new": True})
        return _answer(registration, pusher, created=True, caller=caller, warnings=warnings)
    raise ServiceUnavailable("the registration changed concurrently; retry the report")


def _create(
    target: Mapping[str, Any],
    caller: Caller,
    *,
    store: ReportStore,
    clock: Callable[[], float],
    gateway_url: str,
) -> Registration:
    pushkey = new_pushkey()
    app_id = str(target["app_id"])
    pusher, _ = build_pusher(
        {
            "app_id": app_id,
            "app_display_name": app_id,
            "device_display_name": DEVICE_DISPLAY_NAME,
            "lang": "en",
            "format": "event_id_only",
            "append": False,
        },
        BACKEND,
        pushkey=pushkey,
        notify_url=gateway_url + NOTIFY_PATH,
    )
    registration = Registration(
        rid=registration_id(pushkey),
        pushkey=pushkey,
        backend=BACKEND.name,
        target=dict(target),
        app_id=app_id,
        owner=caller.owner,
        created_at=clock(),
        homeserver=caller.homeserver,
        pusher=pusher,
        pusher_registered=not caller.operator,
        claim=str(target["selector"]),
    )
    store.create_registration(registration)
    return registration


def _set_pusher(matrix: MatrixClient, caller: Caller, pusher: Mapping[str, Any]) -> None:
    if caller.homeserver and caller.access_token:
        matrix.set_pusher(caller.homeserver, caller.access_token, pusher)


def _answer(
    registration: Registration,
    pusher: Mapping[str, Any],
    *,
    created: bool,
    caller: Caller,
    warnings: list[str],
) -> dict[str, Any]:
    """matrix2acrobits answers `{}`; the softphone ignores the body, so it can say more."""
    if caller.operator:
        warnings = [
            *warnings,
            "pusher: not registered on a homeserver (the operator token is not a Matrix "
            "token); send the returned 'pusher' to /_matrix/client/v3/pushers/set yourself",
        ]
    answer: dict[str, Any] = {
        "pushkey": registration.pushkey,
        "app_id": registration.app_id,
        "pusher": dict(pusher),
        "pusher_registered": registration.pusher_registered,
        "created": created,
    }
    if warnings:
        answer["warnings"] = warnings
    return answer


# --- Field validation ---------------------------------------------------------------------------


def _reported_target(body: Mapping[str, Any]) -> dict[str, Any]:
    """The Acrobits target a report describes; errors name the report's own fields."""
    selector = _token(body, "selector")
    token_msgs = _token(body, "token_msgs")
    appid_msgs = _aliased_token(body, "appid_msgs", "app_id_msgs")
    if selector is None:
        raise MissingParam("selector: required")
    if token_msgs is None:
        raise MissingParam("token_msgs: required")
    if appid_msgs is None:
        raise MissingParam("appid_msgs: required (or app_id_msgs)")
    name, app_id = appid_msgs
    if len(app_id) > MAX_APP_ID_CHARS:
        raise InvalidParam(
            f"{name}: must be at most {MAX_APP_ID_CHARS} characters (it becomes the pusher's "
            "app_id)"
        )
    target: dict[str, Any] = {"device_token": token_msgs, "app_id": app_id, "selector": selector}
    token_calls = _token(body, "token_calls")
    appid_calls = _aliased_token(body, "appid_calls", "app_id_calls")
    if (token_calls is None) != (appid_calls is None):
        missing = "token_calls" if token_calls is None else "appid_calls (or app_id_calls)"
        present = "appid_calls" if token_calls is None else "token_calls"
        raise MissingParam(f"{missing}: required with {present}")
    if token_calls is not None and appid_calls is not None:
        target["calls_device_token"] = token_calls
        target["calls_app_id"] = appid_calls[1]
    return target


def _aliased_token(body: Mapping[str, Any], name: str, alias: str) -> tuple[str, str] | None:
    value = _token(body, name)
    other = _token(body, alias)
    if value is not None and other is not None and value != other:
        raise InvalidParam(f"{alias}: differs from {name} (send one of them)")
    if value is not None:
        return name, value
    return (alias, other) if other is not None else None


def _token(body: Mapping[str, Any], name: str) -> str | None:
    """A reported token or identifier: printable ASCII, no spaces. Empty means not reported
    (the reporter's templates leave a token out as an empty string, e.g. no PushKit token on
    Android)."""
    value = body.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidParam(f"{name}: must be a non-empty string")
    value = value.strip()
    if len(value) > _MAX_TOKEN_CHARS:
        raise InvalidParam(f"{name}: must be at most {_MAX_TOKEN_CHARS} characters")
    if any(ord(c) < 0x21 or ord(c) > 0x7E for c in value):
        raise InvalidParam(f"{name}: must be printable ASCII without spaces")
    return value
