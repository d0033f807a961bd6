"""Helpers for backend contract tests: captured Synapse bodies rendered as a delivery would."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mxpush.events import summarize
from mxpush.model import Batch, EventRef, RegistrationOptions
from mxpush.notification import parse_notify_body
from mxpush.render import PushMessage, render_batch
from mxpush.urlsafety import TargetPolicy

FIXTURES = Path(__file__).parents[1] / "fixtures" / "synapse-1.163.2"
PUBLIC = "93.184.216.34"
DEFAULT = RegistrationOptions()


def rendered(name: str, options: RegistrationOptions = DEFAULT) -> PushMessage:
    """The message a one-event batch of this captured body renders to."""
    notification = parse_notify_body((FIXTURES / f"{name}.json").read_bytes())
    event = summarize(notification, notification.devices[0])
    ref = EventRef(event.event_id, event.room_id, 1000.0, event.urgency)
    return render_batch(Batch("batch-1", event, (ref,), 1000.0), options)


def rendered_batch(names: Sequence[str], options: RegistrationOptions = DEFAULT) -> PushMessage:
    """A batch of several captured bodies (each with its own event id), the last one shown."""
    refs = []
    event = None
    for index, name in enumerate(names):
        notification = parse_notify_body((FIXTURES / f"{name}.json").read_bytes())
        event = summarize(notification, notification.devices[0])
        refs.append(EventRef(f"$event-{index}", event.room_id, 1000.0 + index, event.urgency))
    assert event is not None
    latest = EventRef(event.event_id, event.room_id, 2000.0, event.urgency)
    return render_batch(Batch("batch-1", event, (*refs[:-1], latest), 1000.0), options)


def resolving(table: dict[str, list[str]], *, allow_private: bool = False) -> TargetPolicy:
    """A policy whose DNS answers come from `table`."""

    def resolve(host: str, port: int) -> Sequence[str]:
        return table[host]

    return TargetPolicy(allow_private=allow_private, resolver=resolve)
