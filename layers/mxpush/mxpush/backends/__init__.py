"""The backend registry: routing by exact name, no dynamic imports.

Each sender Lambda imports only its own backend module, so one backend's dependencies
never weigh on another's cold start. The registration API imports the registry.
"""

from __future__ import annotations

from mxpush.backends.acrobits import AcrobitsBackend
from mxpush.backends.bark import BarkBackend
from mxpush.backends.base import Backend
from mxpush.backends.email import EmailBackend
from mxpush.backends.gotify import GotifyBackend
from mxpush.backends.ntfy import NtfyBackend
from mxpush.backends.unifiedpush import UnifiedPushBackend
from mxpush.backends.webhook import WebhookBackend
from mxpush.backends.webpush import WebPushBackend

BACKENDS: dict[str, Backend] = {
    backend.name: backend
    for backend in (
        GotifyBackend(),
        UnifiedPushBackend(),
        AcrobitsBackend(),
        NtfyBackend(),
        BarkBackend(),
        WebhookBackend(),
        WebPushBackend(),
        EmailBackend(),
    )
}


def get_backend(name: str) -> Backend | None:
    return BACKENDS.get(name)
