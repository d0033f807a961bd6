"""`fit_bytes`: text cut to a push service's byte limit, never in the middle of a character."""

from __future__ import annotations

import pytest

from mxpush.backends.limits import fit_bytes


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("hello", 5, "hello"),
        ("hello!", 5, "he…"),
        ("", 0, ""),
        ("日本語", 9, "日本語"),
        ("日本語テキスト", 9, "日本…"),  # 9 bytes: one 3-byte character and the 3-byte "…"
        ("🎉🎉🎉", 10, "🎉…"),  # the second emoji would be cut: it is dropped whole
        ("abc", 2, "…"),
    ],
)
def test_fit_bytes(text: str, limit: int, expected: str) -> None:
    result = fit_bytes(text, limit)

    assert result == expected
    assert len(result.encode()) <= max(limit, len("…".encode()))
