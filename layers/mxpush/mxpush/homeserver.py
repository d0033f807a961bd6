"""The few Matrix client-server API calls the registration API makes for its callers.

Homeserver URLs come from the operator's `MXPUSH_ALLOWED_HOMESERVERS`, never from users, so they
may be private addresses (a homeserver next to the gateway); redirects are still not followed.
A caller's access token is used for the call at hand and never stored or logged.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Mapping
from typing import Any

from mxpush.errors import (
    Forbidden,
    OutboundError,
    UnknownToken,
    UpstreamFailed,
)
from mxpush.outbound import HttpResponse, OutboundHttp

WHOAMI_CACHE_SECONDS = 60.0
_WHOAMI_CACHE_MAX = 1000


class MatrixClient:
    def __init__(self, http: OutboundHttp, *, clock: Callable[[], float]) -> None:
        self._http = http
        self._clock = clock
        self._whoami_cache: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def whoami(self, homeserver: str, access_token: str) -> str:
        """The user ID an access token belongs to. Raises `UnknownToken` if it is invalid."""
        cache_key = hashlib.sha256(f"{homeserver}\n{access_token}".encode()).hexdigest()
        now = self._clock()
        with self._lock:
            cached = self._whoami_cache.get(cache_key)
            if cached is not None and cached[1] > now:
                return cached[0]
        response = self._call(
            "GET", homeserver, "/_matrix/client/v3/account/whoami", access_token, None
        )
        if response.status == 200:
            user_id = _json(response).get("user_id")
            if not isinstance(user_id, str) or not user_id.startswith("@"):
                raise UpstreamFailed("homeserver: whoami returned no user_id")
            with self._lock:
                if len(self._whoami_cache) >= _WHOAMI_CACHE_MAX:
                    self._whoami_cache.clear()
                self._whoami_cache[cache_key] = (user_id, now + WHOAMI_CACHE_SECONDS)
            return user_id
        if response.status == 401:
            raise UnknownToken("the access token is not valid on that homeserver")
        if response.status == 403:
            raise Forbidden(f"homeserver refused the token: {_matrix_error(response)}")
        raise UpstreamFailed(f"homeserver whoami answered {response.status}")

    def set_pusher(self, homeserver: str, access_token: str, pusher: Mapping[str, Any]) -> None:
        response = self._call(
            "POST", homeserver, "/_matrix/client/v3/pushers/set", access_token, pusher
        )
        if response.status != 200:
            raise UpstreamFailed(
                f"homeserver pushers/set answered {response.status}: {_matrix_error(response)}"
            )

    def remove_pusher(self, homeserver: str, access_token: str, app_id: str, pushkey: str) -> None:
        body = {"kind": None, "app_id": app_id, "pushkey": pushkey}
        response = self._call(
            "POST", homeserver, "/_matrix/client/v3/pushers/set", access_token, body
        )
        if response.status != 200:
            raise UpstreamFailed(
                f"homeserver pushers/set (delete) answered {response.status}: "
                f"{_matrix_error(response)}"
            )

    def _call(
        self,
        method: str,
        homeserver: str,
        path: str,
        access_token: str,
        body: Mapping[str, Any] | None,
    ) -> HttpResponse:
        headers = {"Authorization": f"Bearer {access_token}"}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        try:
            return self._http.request(method, homeserver + path, headers=headers, body=data)
        except OutboundError as exc:
            raise UpstreamFailed(f"homeserver unreachable: {exc}") from None


def _json(response: HttpResponse) -> dict[str, Any]:
    try:
        value = json.loads(response.body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _matrix_error(response: HttpResponse) -> str:
    data = _json(response)
    if "errcode" in data:
        return f"{data.get('errcode')} {data.get('error', '')}".strip()
    return response.text(100)
