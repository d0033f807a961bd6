"""The whole gateway on 127.0.0.1: the template's routes in front of the real handlers, as
API Gateway HTTP API (payload format 2.0) events, with AWS from `LocalAws`.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import os
import re
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from mxpush import metrics
from mxpush.config import MAX_DELAY_SECONDS, int_setting
from mxpush_local.aws import REGION, LocalAws
from mxpush_local.cors import CorsPolicy
from mxpush_local.http_server import METHODS, HttpServer
from mxpush_local.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from mxpush_local.metrics import LocalMetrics
from mxpush_local.priority import requests_first
from mxpush_local.recovery import Recovery, recover
from mxpush_local.state import MEMORY, Journal, read_secrets, secrets_file, write_secrets
from mxpush_local.template import Route, Template, load_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
LOOPBACK = "127.0.0.1"
# Where `make run` keeps registrations, pending pushes and the delivery log (gitignored).
DEFAULT_STATE = ROOT / ".mxpush" / "state"
# The VAPID contact when none is given. Fine for Chrome and Firefox; Apple's push service refuses
# @localhost: set MXPUSH_VAPID_SUBJECT to a real address to push to Safari.
LOCAL_VAPID_SUBJECT = "mailto:mxpush@localhost"
# Local mode only (API Gateway has no such route): the handlers' metrics in Prometheus text.
METRICS_PATH = "/metrics"
log = logging.getLogger("mxpush_local")


@dataclass(frozen=True)
class LocalSettings:
    port: int = 3000
    # Loopback by default: beyond it, the operator token travels over plain HTTP.
    host: str = LOOPBACK
    # Where Synapse reaches this gateway (the pusher URL); empty = `url`.
    public_url: str = ""
    admin_token: str = ""
    delay_seconds: int = 25
    allowed_homeservers: str = ""
    allow_private_targets: bool = True
    unifiedpush_app_ids: str = ""
    unifiedpush_hosts: str = ""
    # Print one line per HTTP request.
    access_log: bool = True
    # Web Push: empty = a key pair generated at the first start, kept beside the state file
    # (or for the session, in memory).
    vapid_private_key: str = field(default="", repr=False)
    vapid_subject: str = ""
    # Origins whose web pages may call the API from a browser (CORS); empty = none.
    cors_origins: str = ""
    # Email through an SMTP server (`smtp://user:password@host:port`, `smtps://...`) as
    # `email_from`; both empty = email disabled. The unsubscribe links' key: empty = generated
    # at the first start and kept beside the state file, like the VAPID key.
    smtp_url: str = field(default="", repr=False)
    smtp_starttls: bool = True
    email_from: str = ""
    unsubscribe_secret: str = field(default="", repr=False)
    # The state file (`state.py`); `:memory:` keeps nothing after a stop (tests).
    state: str = MEMORY

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LocalSettings:
        def flag(name: str, default: bool) -> bool:
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                return default
            return raw.strip().lower() in ("1", "true", "yes", "on")

        return cls(
            port=int_setting(env, "PORT", 3000, 0, 65535),
            host=env.get("MXPUSH_HOST", "").strip() or LOOPBACK,
            public_url=env.get("MXPUSH_PUBLIC_URL", "").strip(),
            admin_token=env.get("MXPUSH_ADMIN_TOKEN", ""),
            delay_seconds=int_setting(env, "MXPUSH_DELAY_SECONDS", 25, 0, MAX_DELAY_SECONDS),
            allowed_homeservers=env.get("MXPUSH_ALLOWED_HOMESERVERS", ""),
            allow_private_targets=flag("MXPUSH_ALLOW_PRIVATE_TARGETS", True),
            unifiedpush_app_ids=env.get("MXPUSH_UNIFIEDPUSH_APP_IDS", ""),
            unifiedpush_hosts=env.get("MXPUSH_UNIFIEDPUSH_HOSTS", ""),
            vapid_private_key=env.get("MXPUSH_VAPID_PRIVATE_KEY", "").strip(),
            vapid_subject=env.get("MXPUSH_VAPID_SUBJECT", "").strip(),
            cors_origins=env.get("MXPUSH_CORS_ORIGINS", ""),
            smtp_url=env.get("MXPUSH_SMTP_URL", "").strip(),
            smtp_starttls=flag("MXPUSH_SMTP_STARTTLS", True),
            email_from=env.get("MXPUSH_EMAIL_FROM", "").strip(),
            unsubscribe_secret=env.get("MXPUSH_UNSUBSCRIBE_SECRET", "").strip(),
            state=env.get("MXPUSH_STATE", "").strip() or str(DEFAULT_STATE),
        )


@dataclass(frozen=True)
class _CompiledRoute:
    route: Route
    function: str
    pattern: re.Pattern[str] | None
    # Higher is more specific: API Gateway prefers exact paths, then fewer variables.
    rank: tuple[int, int, int]


class LocalGateway:
    """Start with `start()`; `url` is then where it listens. `stop()` undoes everything."""

    def __init__(self, settings: LocalSettings, *, template_path: Path = TEMPLATE) -> None:
        self.settings = settings
        # With a state file, what is generated here is generated once and kept beside it.
        state = None if settings.state == MEMORY else _path(settings.state)
        self.secrets_path = secrets_file(state) if state else None
        kept = read_secrets(self.secrets_path) if self.secrets_path else {}
        self.admin_token = (
            settings.admin_token or kept.get("admin_token") or secrets.token_urlsafe(24)
        )
        self.generated_admin_token = not settings.admin_token
        from mxpush.vapid import generate_private_key  # noqa: PLC0415 - cryptography, lazily

        self.vapid_private_key = (
            settings.vapid_private_key or kept.get("vapid_private_key") or generate_private_key()
        )
        self.generated_vapid_key = not settings.vapid_private_key
        self.unsubscribe_secret = (
            settings.unsubscribe_secret
            or kept.get("unsubscribe_secret")
            or secrets.token_urlsafe(32)
        )
        generated_unsubscribe_secret = not settings.unsubscribe_secret
        self._secrets_to_keep = {
            **kept,
            **({"admin_token": self.admin_token} if self.generated_admin_token else {}),
            **({"vapid_private_key": self.vapid_private_key} if self.generated_vapid_key else {}),
            **(
                {"unsubscribe_secret": self.unsubscribe_secret}
                if generated_unsubscribe_secret
                else {}
            ),
        }
        self._secrets_kept = kept
        self.template = load_template(template_path)
        self.aws = LocalAws(self.template)
        self.aws.journal = _journal(settings.state, self.template, self.aws.table_name)
        # What the start re-drove from the kept state (None: nothing was kept).
        self.recovery: Recovery | None = None
        self._routes = self._compile_routes()
        # API Gateway's CorsConfiguration, which answers before any function is involved.
        self.cors = CorsPolicy.from_setting(settings.cors_origins)
        self._server: HttpServer | None = None
        self._saved_env: dict[str, str | None] = {}
        self.metrics = LocalMetrics()
        self._saved_sink: metrics.Sink | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("not started")
        return self._server.url

    @property
    def listens_beyond_loopback(self) -> bool:
        if self._server is None:
            raise RuntimeError("not started")
        return not is_loopback(self._server.host)

    def start(self) -> None:
        # Bind first: the public URL (for pushers) needs the real port when PORT=0.
        access_log = self._access_line if self.settings.access_log else None
        self._server = HttpServer(
            self._handle_current,
            host=self.settings.host,
            port=self.settings.port,
            access_log=access_log,
        )
        self.aws.start()
        # After the journal's lock: only the one local mode using this state writes it.
        if self.secrets_path is not None and self._secrets_to_keep != self._secrets_kept:
            write_secrets(self.secrets_path, self._secrets_to_keep)
        self._set_environment()
        from mxpush import wiring  # noqa: PLC0415 - after the environment is set

        wiring.reset()
        self._saved_sink = metrics.set_sink(self.metrics)
        # Import every handler before the first request, as warm Lambda containers would have
        # them: a burst of first requests then waits for no import (the loader is locked too).
        for logical_id in self.template.functions:
            self.aws.functions.handler(logical_id)
        if self.aws.journal is not None:
            self.recovery = recover(now=time.time())
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
        self.aws.stop()
        if self._saved_sink is not None:
            metrics.set_sink(self._saved_sink)
            self._saved_sink = None
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        from mxpush import wiring  # noqa: PLC0415

        wiring.reset()

    def environment(self) -> dict[str, str]:
        """What the template sets on AWS (as parameters and resources), for local mode."""
        s = self.settings
        return {
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "MXPUSH_TABLE_NAME": self.aws.table_name,
            **self.aws.environment(),
            "MXPUSH_DELAY_SECONDS": str(s.delay_seconds),
            "MXPUSH_ALLOWED_HOMESERVERS": s.allowed_homeservers,
            "MXPUSH_ALLOW_PRIVATE_TARGETS": "true" if s.allow_private_targets else "false",
            "MXPUSH_ADMIN_TOKEN": self.admin_token,
            "MXPUSH_ADMIN_TOKEN_PARAMETER": "",
            "MXPUSH_PUBLIC_URL": s.public_url or self.url,
            "MXPUSH_UNIFIEDPUSH_APP_IDS": s.unifiedpush_app_ids,
            "MXPUSH_UNIFIEDPUSH_HOSTS": s.unifiedpush_hosts,
            "MXPUSH_VAPID_PRIVATE_KEY": self.vapid_private_key,
            "MXPUSH_VAPID_PRIVATE_KEY_PARAMETER": "",
            "MXPUSH_VAPID_SUBJECT": s.vapid_subject or LOCAL_VAPID_SUBJECT,
            "MXPUSH_SMTP_URL": s.smtp_url,
            "MXPUSH_SMTP_STARTTLS": "true" if s.smtp_starttls else "false",
            "MXPUSH_EMAIL_FROM": s.email_from,
            "MXPUSH_EMAIL_TRANSPORT": "",
            "MXPUSH_UNSUBSCRIBE_SECRET": self.unsubscribe_secret,
            "MXPUSH_UNSUBSCRIBE_SECRET_PARAMETER": "",
            "POWERTOOLS_SERVICE_NAME": "mxpush",
        }

    def vapid_public_key(self) -> str:
        """The public half of the session's VAPID key (raises `ConfigError` for a bad key or
        subject: the Web Push backend would refuse them too)."""
        from mxpush.vapid import load_vapid_key  # noqa: PLC0415

        subject = self.settings.vapid_subject or LOCAL_VAPID_SUBJECT
        return load_vapid_key(self.vapid_private_key, subject).public_key

    # --- HTTP -> API Gateway event -> handler --------------------------------------------------

    def handle(
        self, method: str, raw_url: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """One request through the CORS configuration, the route table and a handler, as
        API Gateway would. Background work steps aside meanwhile (`priority.py`)."""
        with requests_first.request():
            return self._handle_request(method, raw_url, headers, body)

    def _handle_request(
        self, method: str, raw_url: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        if self.cors is None:
            return self._route(method, raw_url, headers, body)
        lowered = {k.lower(): v for k, v in headers.items()}
        if self.cors.is_preflight(method, lowered):
            return self.cors.preflight(lowered)
        status, answer_headers, payload = self._route(method, raw_url, headers, body)
        self.cors.decorate(lowered, answer_headers)
        return status, answer_headers, payload

    def _route(
        self, method: str, raw_url: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(raw_url)
        path = parts.path or "/"
        if path == METRICS_PATH and method == "GET":
            return 200, {"Content-Type": METRICS_CONTENT_TYPE}, self.metrics.prometheus().encode()
        match = self._match(method, path)
        if match is None:
            return 404, {"Content-Type": "application/json"}, b'{"message":"Not Found"}'
        compiled, params = match
        event = self._event(
            method,
            path=path,
            query=parts.query,
            headers=headers,
            body=body,
            route=compiled.route,
            params=params,
        )
        result = self.aws.functions.invoke(compiled.function, event)
        return _proxy_response(result)

    def route_label(self, method: str, path: str) -> str:
        """The route a request matched, as written in the template (`/api/v1/pushkeys/{pushkey}`):
        what the access log prints, since paths carry pushkeys."""
        if path == METRICS_PATH and method == "GET":
            return METRICS_PATH
        match = self._match(method, path)
        if match is None:
            return "(no route)"
        route = match[0].route
        return route.path if route.path != "$default" else "$default"

    def _match(self, method: str, path: str) -> tuple[_CompiledRoute, dict[str, str]] | None:
        candidates = []
        for compiled in self._routes:
            if compiled.pattern is None:
                continue
            if compiled.route.method not in ("ANY", method):
                continue
            found = compiled.pattern.match(path)
            if found:
                candidates.append((compiled, found.groupdict()))
        if candidates:
            return max(candidates, key=lambda c: c[0].rank)
        default = [c for c in self._routes if c.pattern is None]
        return (default[0], {}) if default else None

    def _compile_routes(self) -> list[_CompiledRoute]:
        routes = []
        for spec in self.template.functions.values():
            for route in spec.routes:
                if route.path == "$default":
                    routes.append(_CompiledRoute(route, spec.logical_id, None, (0, 0, 0)))
                    continue
                variables = re.findall(r"\{(\w+)\+?\}", route.path)
                greedy = "+}" in route.path
                regex = re.sub(r"\\\{(\w+)\\\+\\\}", r"(?P<\1>.+)", re.escape(route.path))
                regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", regex)
                rank = (0 if greedy else 1, -len(variables), 1 if route.method != "ANY" else 0)
                routes.append(
                    _CompiledRoute(route, spec.logical_id, re.compile(f"^{regex}$"), rank)
                )
        return routes

    def _event(
        self,
        method: str,
        *,
        path: str,
        query: str,
        headers: Mapping[str, str],
        body: bytes,
        route: Route,
        params: dict[str, str],
    ) -> dict[str, Any]:
        route_key = "$default" if route.path == "$default" else f"{route.method} {route.path}"
        lowered = {k.lower(): v for k, v in headers.items()}
        now = time.time()
        event: dict[str, Any] = {
            "version": "2.0",
            "routeKey": route_key,
            "rawPath": path,
            "rawQueryString": query,
            "headers": lowered,
            "requestContext": {
                "accountId": "123456789012",
                "apiId": "local",
                "domainName": lowered.get("host", "127.0.0.1").split(":")[0],
                "domainPrefix": "local",
                "http": {
                    "method": method,
                    "path": path,
                    "protocol": "HTTP/1.1",
                    "sourceIp": "127.0.0.1",
                    "userAgent": lowered.get("user-agent", ""),
                },
                "requestId": str(uuid.uuid4()),
                "routeKey": route_key,
                "stage": "$default",
                "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
                "timeEpoch": int(now * 1000),
            },
            "isBase64Encoded": False,
        }
        if query:
            event["queryStringParameters"] = dict(parse_qsl(query, keep_blank_values=True))
        if params:
            event["pathParameters"] = params
        if body:
            try:
                event["body"] = body.decode("utf-8")
            except UnicodeDecodeError:
                event["body"] = base64.b64encode(body).decode("ascii")
                event["isBase64Encoded"] = True
        return event

    def _set_environment(self) -> None:
        for name, value in self.environment().items():
            self._saved_env.setdefault(name, os.environ.get(name))
            os.environ[name] = value

    def _handle_current(
        self, method: str, raw_url: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        # `handle` looked up on the instance for every request: tests/e2e wraps it after start().
        return self.handle(method, raw_url, headers, body)

    def _access_line(self, method: str, raw_url: str | None, status: int, ms: float) -> None:
        # The route's label, never the raw path: paths carry pushkeys.
        if raw_url is None:
            label = "(malformed request)"
        elif method in METHODS:
            label = self.route_label(method, urlsplit(raw_url).path or "/")
        else:
            label = "(unsupported method)"
        print(f"{method} {label} {status} {ms:.1f}ms", flush=True)


def _path(state: str) -> Path:
    return Path(state).expanduser().absolute()


def _journal(state: str, template: Template, table_name: str) -> Journal | None:
    if state == MEMORY:
        return None
    props = template.table_properties
    ttl = props.get("TimeToLiveSpecification") or {}
    return Journal(
        _path(state),
        table_name=table_name,
        key_names=tuple(str(k["AttributeName"]) for k in props["KeySchema"]),
        ttl_attribute=str(ttl["AttributeName"]) if ttl.get("Enabled") else None,
        region=REGION,
    )


def is_loopback(address: str) -> bool:
    """Whether a numeric listen address stays on this machine (0.0.0.0 and :: do not)."""
    return ipaddress.ip_address(address).is_loopback


def _proxy_response(result: Any) -> tuple[int, dict[str, str], bytes]:
    """Interpret a Lambda proxy result (payload format 2.0) as API Gateway does."""
    if not isinstance(result, dict) or "statusCode" not in result:
        return 200, {"Content-Type": "application/json"}, json.dumps(result).encode()
    body = result.get("body") or ""
    payload = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode()
    headers = {str(k): str(v) for k, v in (result.get("headers") or {}).items()}
    return int(result["statusCode"]), headers, payload
