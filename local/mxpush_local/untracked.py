"""moto keeps every model object it ever makes - each DynamoDB item, and each copy of an item
a read returns or a write replaces - in a list on its class, for the dashboard of moto's
server (`/moto-api/data.json`), which local mode does not serve. Local mode cleared those lists
with its release pass (every 10 s), so every copy made in between lived until the pass, and a
read of a few thousand items (the sweep's check of old slots) raised the process's allocated
blocks ~300,000 above their usual peak until it, a peak RSS kept. Here the lists drop what is
appended: a read's copies die with the read."""

from __future__ import annotations

from typing import Any

from moto.core.common_models import BaseModel


class Untracked(list[Any]):
    """A class's `instances_tracked` that keeps nothing."""

    def append(self, _instance: Any, /) -> None:
        return None


def forget_model_instances() -> None:
    """Give every moto model class defined so far a list that keeps nothing (classes moto
    defines later - it imports a service's models on first use - get theirs at the next call)."""
    pending: list[type] = [BaseModel]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        tracked = vars(cls).get("instances_tracked")
        if tracked is not None and not isinstance(tracked, Untracked):
            cls.instances_tracked = Untracked()  # type: ignore[attr-defined]
