"""CORS as API Gateway's HTTP API does it when the template gives it a `CorsConfiguration`
(`CorsAllowedOrigins`): the gateway, not the functions, answers preflights and adds the headers,
for every route of the API. Local mode mirrors it from `MXPUSH_CORS_ORIGINS`.

What API Gateway does, and this mirrors: a preflight (`OPTIONS` with `Origin` and
`Access-Control-Request-Method`) is answered 204 without reaching a function, with the allowed
methods, headers and max age when the origin is allowed, and without any CORS header when it is
not (the browser then refuses). Any other request with an allowed `Origin` gets
`Access-Control-Allow-Origin` on its answer; CORS headers a function sets are replaced.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# What template.yaml's CorsConfiguration allows: keep the two the same.
ALLOW_METHODS = "GET,POST,DELETE,OPTIONS"
ALLOW_HEADERS = "authorization,content-type"
MAX_AGE_SECONDS = 600
ANY_ORIGIN = "*"


@dataclass(frozen=True)
class CorsPolicy:
    origins: tuple[str, ...]

    @classmethod
    def from_setting(cls, value: str) -> CorsPolicy | None:
        """`https://a.example.org,https://b.example.org` (or `*`); empty = no CORS at all."""
        origins = tuple(o.strip().rstrip("/") for o in value.split(",") if o.strip())
        return cls(origins) if origins else None

    def allowed_origin(self, origin: str | None) -> str | None:
        """The `Access-Control-Allow-Origin` value for a request from `origin`, or None."""
        if not origin:
            return None
        if ANY_ORIGIN in self.origins:
            return ANY_ORIGIN
        # Origins compare as the browser sends them: scheme, host and port, no path.
        return origin if origin.lower() in (o.lower() for o in self.origins) else None

    @staticmethod
    def is_preflight(method: str, headers: Mapping[str, str]) -> bool:
        return (
            method == "OPTIONS"
            and "origin" in headers
            and "access-control-request-method" in headers
        )

    def preflight(self, headers: Mapping[str, str]) -> tuple[int, dict[str, str], bytes]:
        allowed = self.allowed_origin(headers.get("origin"))
        if allowed is None:
            return 204, {}, b""
        return (
            204,
            {
                "Access-Control-Allow-Origin": allowed,
                "Access-Control-Allow-Methods": ALLOW_METHODS,
                "Access-Control-Allow-Headers": ALLOW_HEADERS,
                "Access-Control-Max-Age": str(MAX_AGE_SECONDS),
                "Vary": "Origin",
            },
            b"",
        )

    def decorate(self, request_headers: Mapping[str, str], headers: dict[str, str]) -> None:
        """Put this policy's CORS headers on an answer, in place of any the function set."""
        for name in [n for n in headers if n.lower().startswith("access-control-")]:
            del headers[name]
        allowed = self.allowed_origin(request_headers.get("origin"))
        if allowed is not None:
            headers["Access-Control-Allow-Origin"] = allowed
            headers["Vary"] = "Origin"
