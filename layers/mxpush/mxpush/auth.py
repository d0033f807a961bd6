"""Who is calling the registration API: the operator, or a Matrix user.

`Authorization: Bearer <token>` carries either the operator token (compared in constant time)
or a Matrix access token, checked with `/account/whoami` on one of the allowed homeservers.
Which homeserver: the `homeserver` the caller names (body or query), else the only allowed one.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from mxpush.config import normalize_base_url
from mxpush.errors import Forbidden, InvalidParam, MissingParam, MissingToken, UnknownToken
from mxpush.homeserver import MatrixClient
from mxpush.model import OPERATOR_OWNER


@dataclass(frozen=True)
class Caller:
    operator: bool
    user_id: str | None = None
    homeserver: str | None = None
    # Kept only for the duration of the request, to call pushers/set on the user's behalf.
    access_token: str | None = field(default=None, repr=False)

    @property
    def owner(self) -> str:
        return OPERATOR_OWNER if self.operator else str(self.user_id)

    def may_see(self, owner: str) -> bool:
        return self.operator or owner == self.user_id


class Authenticator:
    def __init__(
        self,
        *,
        admin_token: str | None,
        allowed_homeservers: tuple[str, ...],
        matrix: MatrixClient,
    ) -> None:
        self._admin_digest = _digest(admin_token) if admin_token else None
        self._allowed = allowed_homeservers
        self._matrix = matrix

    def authenticate(self, authorization: str | None, homeserver_hint: str | None) -> Caller:
        token = bearer_token(authorization)
        if self._admin_digest is not None and hmac.compare_digest(
            _digest(token), self._admin_digest
        ):
            return Caller(operator=True)
        homeserver = self._choose_homeserver(homeserver_hint)
        user_id = self._matrix.whoami(homeserver, token)
        return Caller(operator=False, user_id=user_id, homeserver=homeserver, access_token=token)

    def _choose_homeserver(self, hint: str | None) -> str:
        if not self._allowed:
            raise UnknownToken("unknown token (no homeserver is allowed to register pushkeys)")
        if hint is None:
            if len(self._allowed) == 1:
                return self._allowed[0]
            raise MissingParam(
                "homeserver: required, several homeservers are allowed "
                f"({', '.join(self._allowed)})"
            )
        try:
            homeserver = normalize_base_url(hint)
        except ValueError:
            raise InvalidParam("homeserver: must be an http(s) base URL") from None
        if homeserver not in self._allowed:
            raise Forbidden(f"homeserver {homeserver} is not allowed to register pushkeys here")
        return homeserver


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise MissingToken("missing access token (Authorization: Bearer ...)")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise MissingToken("the Authorization header must be 'Bearer <token>'")
    return token


def _digest(token: str) -> bytes:
    # Comparing fixed-length digests: the time taken reveals nothing about the token's length.
    return hashlib.sha256(token.encode("utf-8")).digest()
