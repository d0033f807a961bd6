"""Registrations made by the notify request itself: stateless UnifiedPush.

UnifiedPush clients (Element, FluffyChat, ...) register a pusher whose pushkey *is* their
distributor's endpoint URL, and expect the gateway to forward there without any other setup.
mxpush does that for the app IDs and endpoint hosts the operator allows: the first event
notification for such a pushkey creates a `unifiedpush` registration (owner `unifiedpush`), and
from then on it is delayed, coalesced and cancelled like any other.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from mxpush.errors import OutboundError
from mxpush.notification import Device
from mxpush.urlsafety import parse_url

IMPLICIT_OWNER = "unifiedpush"
IMPLICIT_BACKEND = "unifiedpush"


@dataclass(frozen=True)
class ImplicitRegistrations:
    # fnmatch patterns of app IDs, e.g. "im.vector.app.android*"; empty = feature off.
    app_id_patterns: tuple[str, ...] = ()
    # Endpoint host names; "*.example.org" matches any subdomain (not example.org itself).
    hosts: tuple[str, ...] = ()
    # Plain http endpoints (only sensible with private targets, i.e. local mode).
    allow_http: bool = False

    @property
    def enabled(self) -> bool:
        return bool(self.app_id_patterns and self.hosts)

    def target_for(self, device: Device) -> dict[str, str] | None:
        """The UnifiedPush target for this device, if its pushkey may be used statelessly."""
        if not self.enabled:
            return None
        if not any(fnmatch.fnmatchcase(device.app_id, p) for p in self.app_id_patterns):
            return None
        try:
            url = parse_url(device.pushkey)
        except OutboundError:
            return None
        if url.scheme != "https" and not (self.allow_http and url.scheme == "http"):
            return None
        if not any(_host_matches(url.host.lower(), h) for h in self.hosts):
            return None
        return {"endpoint": device.pushkey}


def _host_matches(host: str, allowed: str) -> bool:
    allowed = allowed.lower()
    if allowed.startswith("*."):
        return host.endswith(allowed[1:])
    return host == allowed
