"""HTTP requests to URLs users gave us, made safely.

Why urllib3 directly rather than requests: we must connect to the exact address `urlsafety`
approved (no second DNS lookup an attacker could answer differently) while still sending the
right Host header and verifying TLS against the host name. urllib3 supports that directly
(`server_hostname`/`assert_hostname`), needs no adapter subclassing, and is already in the
Lambda runtime (a botocore dependency), so it adds nothing to the layer or to cold starts.

Redirects are never followed; response bodies are capped.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass

import urllib3
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NewConnectionError

from mxpush import __version__
from mxpush.errors import TargetUnreachable
from mxpush.urlsafety import TargetPolicy

USER_AGENT = f"mxpush/{__version__}"
MAX_RESPONSE_BYTES = 64 * 1024
CONNECT_TIMEOUT_SECONDS = 5.0
READ_TIMEOUT_SECONDS = 10.0
_MAX_POOLS = 32


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def text(self, limit: int = 200) -> str:
        """The start of the body, for error messages (backend answers, not user content)."""
        return self.body[:limit].decode("utf-8", "replace").strip()


class OutboundHttp:
    """Makes requests to user-supplied URLs under a `TargetPolicy`. Thread-safe."""

    def __init__(
        self,
        policy: TargetPolicy,
        *,
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
        read_timeout: float = READ_TIMEOUT_SECONDS,
    ) -> None:
        self.policy = policy
        self._timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
        self._pools: dict[tuple[str, str, int, str], urllib3.HTTPConnectionPool] = {}
        self._lock = threading.Lock()

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> HttpResponse:
        """Send one request. Raises `UnsafeTarget` (never retried) or `TargetUnreachable`."""
        parsed = self.policy.parse(url)
        addresses = self.policy.resolve(parsed.host, parsed.port)
        all_headers = {"User-Agent": USER_AGENT, **(headers or {}), "Host": parsed.host_header}
        last_error: Exception | None = None
        for address in addresses:
            pool = self._pool(parsed.scheme, str(address), parsed.port, parsed.host)
            try:
                response = pool.urlopen(
                    method,
                    parsed.target,
                    body=body,
                    headers=all_headers,
                    redirect=False,
                    retries=False,
                    preload_content=False,
                    assert_same_host=False,
                )
            except (NewConnectionError, ConnectTimeoutError) as exc:
                # Nothing was sent: the next address may work.
                last_error = exc
                continue
            except HTTPError as exc:
                raise TargetUnreachable(f"{parsed.host}: {_describe(exc)}") from None
            try:
                data = response.read(MAX_RESPONSE_BYTES + 1)
            except HTTPError as exc:
                response.close()
                raise TargetUnreachable(f"{parsed.host}: {_describe(exc)}") from None
            if len(data) > MAX_RESPONSE_BYTES:
                response.close()
                data = data[:MAX_RESPONSE_BYTES]
            else:
                response.release_conn()
            return HttpResponse(
                status=response.status,
                headers={k.lower(): v for k, v in response.headers.items()},
                body=data,
            )
        detail = _describe(last_error) if last_error else "no address"
        raise TargetUnreachable(f"{parsed.host}: cannot connect ({detail})")

    def _pool(self, scheme: str, address: str, port: int, host: str) -> urllib3.HTTPConnectionPool:
        key = (scheme, address, port, host)
        with self._lock:
            pool = self._pools.get(key)
            if pool is not None:
                return pool
            if len(self._pools) >= _MAX_POOLS:
                oldest = self._pools.pop(next(iter(self._pools)))  # dicts keep insertion order
                oldest.close()
            if scheme == "https":
                pool = urllib3.HTTPSConnectionPool(
                    address,
                    port,
                    timeout=self._timeout,
                    maxsize=2,
                    retries=False,
                    cert_reqs="CERT_REQUIRED",
                    server_hostname=host,
                    assert_hostname=host,
                )
            else:
                pool = urllib3.HTTPConnectionPool(
                    address, port, timeout=self._timeout, maxsize=2, retries=False
                )
            self._pools[key] = pool
            return pool


def _describe(exc: BaseException) -> str:
    """A short reason without the URL (URLs may carry tokens in their query)."""
    name = type(exc).__name__
    if "Timeout" in name:
        return "timed out"
    if isinstance(exc, NewConnectionError):
        return "connection refused or unreachable"
    return name
