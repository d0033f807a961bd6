"""Size limits of push services: cut text to a byte budget without breaking a character."""

from __future__ import annotations

ELLIPSIS = "…"


def fit_bytes(text: str, max_bytes: int) -> str:
    """`text` if its UTF-8 form fits `max_bytes`, else its longest prefix that fits with "…"."""
    encoded = text.encode()
    if len(encoded) <= max_bytes:
        return text
    budget = max_bytes - len(ELLIPSIS.encode())
    # Dropping the bytes of a cut character: decode with "ignore" removes a partial sequence.
    return encoded[: max(budget, 0)].decode("utf-8", "ignore") + ELLIPSIS
