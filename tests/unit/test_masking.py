"""What API answers show of secrets: enough to tell two apart, never enough to use one."""

from __future__ import annotations

import pytest

from mxpush.backends.base import mask_secret, mask_url


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("AbCdEfGhIjKlMn", "****lMn"),
        ("short-token", "****"),  # under 12 characters: not even the tail
        ("", "****"),
    ],
)
def test_mask_secret(value: str, shown: str) -> None:
    assert mask_secret(value) == shown


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://fcm.googleapis.com/fcm/send/cJ7Hx2:APA91bEabcdefXyz",
            "https://fcm.googleapis.com/****Xyz",
        ),
        ("https://ntfy.example.org:8443/upAbCdEf123?up=1", "https://ntfy.example.org:8443/****p=1"),
        # Credentials in the URL are secrets too.
        ("https://user:pa55word@push.example.org/topic-secret", "https://push.example.org/****ret"),
        ("not a url at all, but long", "****ong"),
    ],
)
def test_mask_url_keeps_only_the_origin(url: str, shown: str) -> None:
    masked = mask_url(url)
    assert masked == shown
    assert "pa55word" not in masked
