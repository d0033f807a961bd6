"""The backend registry: routing by exact name, no dynamic imports.

Each sender Lambda imports only its own backend module, so one backend's dependencies
never weigh on another's cold start. The registration API imports the registry.
"""

from __future__ import annotations

from mxpush.backends.base import Backend
from mxpush.backends.gotify import GotifyBackend
from mxpush.backends.webpush import WebPushBackend

BACKENDS: dict[str, Backend] = {
    backend.name: backend for backend in (GotifyBackend(), WebPushBackend())
}


def get_backend(name: str) -> Backend | None:
    return BACKENDS.get(name)
