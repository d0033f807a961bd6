"""`summarize` and `render_batch` on real Synapse notify bodies: what a person sees."""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from mxpush.events import EventSummary, Urgency, summarize
from mxpush.model import Batch, EventRef, RegistrationOptions
from mxpush.notification import MAX_MESSAGE_BODY_BYTES, parse_notify_body
from mxpush.render import (
    MessageKind,
    PushMessage,
    check_click_url_template,
    click_url,
    render_batch,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "synapse-1.163.2"
GROUP_ROOM = "!bbQQMCPwmd9aM1RGdKYA_jwXJsIG1Mb_o6KwYXBITTU"
DM_ROOM = "!YIkXvNfjndhc9gq49pm2feQdKxlW4LZTdsnotiA5TMg"
CIPHERTEXT = "AwgAEnACgAkLmt6qF84IK++J7UDH2Za1YVchHyprqTqsg"
SENDER_KEY = "IlRMeOPX2e0MurIyfWEucYBRVOEEUMrOHqn/8mLqMjA"
SESSION_ID = "X3lUlvLELLYxeTx4yOVu6UDpasGEVO0Jbu+QFnm0cKQ"
DEFAULT = RegistrationOptions()
# Every captured body that carries an event (the others are badge-only updates).
EVENT_FIXTURES = [
    path
    for path in sorted(FIXTURES.glob("*.json"))
    if "event_id" in json.loads(path.read_text())["notification"]
]


def body(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return loaded


def summary_of(document: dict[str, Any]) -> EventSummary:
    notification = parse_notify_body(json.dumps(document).encode())
    return summarize(notification, notification.devices[0])


def summary(name: str, **content: Any) -> EventSummary:
    """The summary of a fixture, with `content` fields replaced."""
    document = body(name)
    document["notification"]["content"].update(content)
    return summary_of(document)


def single(event: EventSummary, options: RegistrationOptions = DEFAULT) -> PushMessage:
    ref = EventRef(event.event_id, event.room_id, 1000.0, event.urgency)
    return render_batch(Batch("batch-1", event, (ref,), 1000.0), options)


def batch_of(latest: EventSummary, refs: list[tuple[str | None, Urgency]]) -> Batch:
    """A batch whose last ref is `latest`; earlier refs get made-up event IDs."""
    events = [
        EventRef(f"$earlier{i}", room, 1000.0 + i, urgency)
        for i, (room, urgency) in enumerate(refs)
    ]
    events.append(EventRef(latest.event_id, latest.room_id, 2000.0, latest.urgency))
    return Batch("batch-1", latest, tuple(events), 1000.0)


def all_text(message: PushMessage) -> str:
    return " ".join(str(v) for v in dataclasses.asdict(message).values())


# --- single events ------------------------------------------------------------------------------


def test_dm_message() -> None:
    message = single(summary("message_dm_2_members.1.full"))

    assert message.title == "alice"
    assert message.body == "hi, this is a DM"
    assert message.kind is MessageKind.MESSAGE
    assert message.urgency is Urgency.HIGH
    assert message.count == 1
    assert message.room_id == DM_ROOM
    assert message.sender == "@alice:localhost"
    assert message.sound == "default"
    assert message.unread == 2


def test_group_message_is_low_priority() -> None:
    message = single(summary("message_group_3_members.1.full"))

    assert message.title == "E2E Group"
    assert message.body == "alice: hello group"
    assert message.urgency is Urgency.LOW
    assert message.room_name == "E2E Group"


@pytest.mark.parametrize(
    "name", ["message_group_mention.1.full", "message_dm_contains_displayname.1.full"]
)
def test_highlight_is_highlight_urgency(name: str) -> None:
    event = summary(name)

    assert event.highlight is True
    assert single(event).urgency is Urgency.HIGHLIGHT


def test_mention_text() -> None:
    message = single(summary("message_group_mention.1.full"))

    assert (message.title, message.body) == ("E2E Group", "alice: bob: are you there?")


def test_sender_without_display_name_falls_back_to_user_id() -> None:
    document = body("message_group_3_members.1.full")
    del document["notification"]["sender_display_name"]

    assert single(summary_of(document)).body == "@alice:localhost: hello group"


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("member_invite_group.1.full", "alice invited you to E2E Group"),
        ("member_invite_dm.1.full", "alice invited you to a direct chat"),
    ],
)
def test_invites(name: str, text: str) -> None:
    event = summary(name)
    message = single(event)

    assert event.is_invite
    assert message.title == "Invitation"
    assert message.body == text
    assert message.kind is MessageKind.INVITE


def test_invite_of_someone_else_is_not_an_invitation() -> None:
    document = body("member_invite_group.1.full")
    document["notification"]["user_is_target"] = False

    event = summary_of(document)

    assert not event.is_invite
    assert single(event).kind is MessageKind.MESSAGE


def test_call_in_a_dm() -> None:
    message = single(summary("call_invite_dm.1.full"))

    assert message.title == "Incoming call from alice"
    assert message.body == "Voice call"
    assert message.urgency is Urgency.CALL
    assert message.kind is MessageKind.CALL
    assert message.sound == "ring"


def test_call_in_a_group_names_the_room() -> None:
    message = single(summary("call_invite_group.1.full"))

    assert message.title == "Incoming call from alice"
    assert message.body == "Voice call in E2E Group"
    assert message.urgency is Urgency.CALL


def test_video_call() -> None:
    sdp = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
    voice = summary("call_invite_dm.1.full", offer={"type": "offer", "sdp": sdp})
    video = summary(
        "call_invite_dm.1.full",
        offer={"type": "offer", "sdp": sdp + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n"},
    )

    assert (voice.video, single(voice).body) == (False, "Voice call")
    assert (video.video, single(video).body) == (True, "Video call")


def test_call_urgency_beats_highlight() -> None:
    document = body("call_invite_dm.1.full")
    document["notification"]["devices"][0]["tweaks"]["highlight"] = True

    assert summary_of(document).urgency is Urgency.CALL


@pytest.mark.parametrize(
    ("name", "title", "text"),
    [
        ("encrypted_dm.1.full", "alice", "Encrypted message"),
        ("encrypted_group.1.full", "E2E Group", "alice: Encrypted message"),
    ],
)
def test_encrypted_never_shows_ciphertext(name: str, title: str, text: str) -> None:
    document = body(name)
    # Even a (malicious or buggy) `body` next to the ciphertext is not shown.
    document["notification"]["content"]["body"] = "plaintext leak"
    event = summary_of(document)
    message = single(event)

    assert (message.title, message.body) == (title, text)
    stored = json.dumps(event.to_item())
    shown = all_text(message)
    for secret in (CIPHERTEXT, SENDER_KEY, SESSION_ID, "plaintext leak"):
        assert secret not in stored
        assert secret not in shown


@pytest.mark.parametrize(
    "name",
    [
        "message_group_mention.0.eio",
        "call_invite_dm.0.eio",
        "encrypted_group.0.eio",
        "member_invite_dm.0.eio",
    ],
)
def test_event_id_only_is_generic(name: str) -> None:
    event = summary_of(body(name))
    message = single(event)

    assert event.withheld
    assert message.title == "New message"
    assert message.body == "You have a new message."
    assert message.kind is MessageKind.MESSAGE
    assert message.sender is None
    assert message.sender_name is None
    assert message.room_name is None
    assert "alice" not in all_text(message)
    assert "E2E Group" not in all_text(message)


def test_include_content_false_hides_the_text_in_a_group() -> None:
    message = single(
        summary("message_group_3_members.1.full"), RegistrationOptions(include_content=False)
    )

    assert (message.title, message.body) == ("E2E Group", "alice: New message")
    assert "hello group" not in all_text(message)


def test_include_content_false_hides_the_text_in_a_dm() -> None:
    message = single(
        summary("message_dm_2_members.1.full"), RegistrationOptions(include_content=False)
    )

    assert (message.title, message.body) == ("alice", "New message")
    assert "this is a DM" not in all_text(message)


def test_include_content_false_hides_emote_text() -> None:
    event = summary("message_group_3_members.1.full", msgtype="m.emote", body="waves secretly")

    message = single(event, RegistrationOptions(include_content=False))

    assert message.body == "alice: New message"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("message_group_3_members.1.full", "* alice waves"),
        ("message_dm_2_members.1.full", "* alice waves"),
    ],
)
def test_emote(name: str, expected: str) -> None:
    message = single(summary(name, msgtype="m.emote", body="waves"))

    assert message.body == expected


def test_image_does_not_show_the_file_name() -> None:
    event = summary("message_group_3_members.1.full", msgtype="m.image", body="cat.png")

    message = single(event)

    assert message.body == "alice: sent an image"
    assert "cat.png" not in all_text(message)


def test_sticker() -> None:
    document = body("message_dm_2_members.1.full")
    document["notification"]["type"] = "m.sticker"

    assert single(summary_of(document)).body == "sent a sticker"


def test_body_is_cut_at_1000_bytes() -> None:
    assert MAX_MESSAGE_BODY_BYTES == 1000
    long = summary("message_dm_2_members.1.full", body="a" * 1500)
    exact = summary("message_dm_2_members.1.full", body="b" * 1000)
    # 334 three-byte characters are 1002 bytes: the cut keeps whole characters only.
    wide = summary("message_dm_2_members.1.full", body="€" * 334)

    assert long.body == "a" * 997 + "…"
    assert single(long).body == "a" * 997 + "…"
    assert exact.body == "b" * 1000
    assert wide.body == "€" * 332 + "…"


def test_badge_only_cannot_be_summarized() -> None:
    notification = parse_notify_body(json.dumps(body("read_receipt_dm_badge.0.full")).encode())

    with pytest.raises(ValueError, match="badge-only"):
        summarize(notification, notification.devices[0])


# --- batches ------------------------------------------------------------------------------------


def test_coalesced_in_one_room() -> None:
    latest = summary("message_group_3_members.1.full")
    batch = batch_of(latest, [(GROUP_ROOM, Urgency.LOW), (GROUP_ROOM, Urgency.LOW)])

    message = render_batch(batch, DEFAULT)

    assert message.count == 3
    assert message.title == "E2E Group: 3 new messages"
    assert message.body == "alice: hello group"
    assert message.event_id == latest.event_id


def test_coalesced_in_a_dm() -> None:
    latest = summary("message_dm_2_members.1.full")

    message = render_batch(batch_of(latest, [(DM_ROOM, Urgency.HIGH)]), DEFAULT)

    assert message.title == "alice: 2 new messages"
    assert message.body == "hi, this is a DM"


def test_coalesced_across_rooms_latest_in_a_group() -> None:
    latest = summary("message_group_3_members.1.full")
    batch = batch_of(latest, [(DM_ROOM, Urgency.HIGH), (GROUP_ROOM, Urgency.LOW)])

    message = render_batch(batch, DEFAULT)

    assert message.title == "3 new messages in 2 rooms"
    assert message.body == "E2E Group · alice: hello group"


def test_coalesced_across_rooms_latest_in_a_dm() -> None:
    latest = summary("message_dm_2_members.1.full")

    message = render_batch(batch_of(latest, [(GROUP_ROOM, Urgency.LOW)]), DEFAULT)

    assert message.title == "2 new messages in 2 rooms"
    assert message.body == "alice: hi, this is a DM"


def test_coalesced_event_id_only() -> None:
    latest = summary_of(body("message_group_mention.0.eio"))

    message = render_batch(batch_of(latest, [(GROUP_ROOM, Urgency.HIGH)]), DEFAULT)

    assert (message.title, message.body) == ("2 new messages", "You have new messages.")


def test_coalesced_invite_is_shown_as_messages() -> None:
    latest = summary("member_invite_group.1.full")

    message = render_batch(batch_of(latest, [(GROUP_ROOM, Urgency.LOW)]), DEFAULT)

    assert message.kind is MessageKind.MESSAGE
    assert message.title == "E2E Group: 2 new messages"
    assert message.body == "alice invited you to E2E Group"


def test_batch_urgency_is_the_highest_of_its_events() -> None:
    latest = summary("message_group_3_members.1.full")
    assert latest.urgency is Urgency.LOW
    batch = batch_of(latest, [(GROUP_ROOM, Urgency.LOW), (GROUP_ROOM, Urgency.HIGHLIGHT)])

    assert batch.urgency is Urgency.HIGHLIGHT
    assert render_batch(batch, DEFAULT).urgency is Urgency.HIGHLIGHT


def test_urgency_order() -> None:
    assert Urgency.LOW < Urgency.HIGH < Urgency.HIGHLIGHT < Urgency.CALL
    assert [u.key for u in Urgency] == ["low", "high", "highlight", "call"]


# --- the stored form ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", EVENT_FIXTURES, ids=lambda p: p.stem)
def test_summary_round_trips_through_its_item(path: Path) -> None:
    event = summary_of(json.loads(path.read_text()))

    item = event.to_item()

    assert EventSummary.from_item(json.loads(json.dumps(item))) == event
    assert all(v not in (None, False, "") for v in item.values())


def test_from_item_takes_dynamodb_numbers_and_ignores_unknown_keys() -> None:
    event = summary("message_dm_2_members.1.full")
    item = {**event.to_item(), "unread": Decimal(2), "added_later": "x"}

    restored = EventSummary.from_item(item)

    assert restored == event
    assert type(restored.unread) is int


# --- click URLs ---------------------------------------------------------------------------------


def test_default_click_url_is_matrix_to() -> None:
    event = summary("message_group_mention.1.full")

    assert (
        single(event).click_url
        == "https://matrix.to/#/!bbQQMCPwmd9aM1RGdKYA_jwXJsIG1Mb_o6KwYXBITTU"
        "/$-ua_nw959CRpUT5XabGaIbDJyRyBzHQDZQieXOt1nHY"
    )


def test_click_url_keeps_server_names_readable() -> None:
    event = EventSummary(event_id="$ev:example.org", room_id="!room:example.org")

    assert click_url(None, event) == "https://matrix.to/#/!room:example.org/$ev:example.org"


def test_click_url_escapes_path_characters() -> None:
    event = EventSummary(event_id="$a/b#c", room_id="!r/../x?y")

    url = click_url("mesh://room/{room_id}/{event_id}", event)

    assert url == "mesh://room/!r%2F..%2Fx%3Fy/$a%2Fb%23c"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (
            "element://vector/webapp/#/room/{room_id}/{event_id}",
            f"element://vector/webapp/#/room/{DM_ROOM}/$9YKtqgWbvfhsr99S2R_6S66iVIWunPAkPKPnHo_e5tI",
        ),
        ("mesh://room/{room_id}", f"mesh://room/{DM_ROOM}"),
        (
            "https://chat.example.org/#/user/{sender}",
            "https://chat.example.org/#/user/@alice:localhost",
        ),
    ],
)
def test_custom_click_url(template: str, expected: str) -> None:
    event = summary("message_dm_2_members.1.full")
    check_click_url_template(template)

    assert single(event, RegistrationOptions(click_url=template)).click_url == expected


def test_no_click_url_without_a_room() -> None:
    event = EventSummary(event_id="$ev")

    assert click_url(None, event) is None
    assert click_url("mesh://room/{room_id}", event) is None


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("https://example.org/{user_id}", "unknown placeholder"),
        ("https://example.org/{room_id.__class__}", "unknown placeholder"),
        ("https://example.org/{0}", "unknown placeholder"),
        ("https://example.org/{}", "unknown placeholder"),
        ("javascript:alert({room_id})", "not allowed"),
        ("  JavaScript:alert(1)", "not allowed"),
        ("data:text/html,hi", "not allowed"),
        ("matrix.to/#/{room_id}", "scheme"),
        ("/room/{room_id}", "scheme"),
        ("https://example.org/{room_id", "placeholder syntax"),
        ("https://example.org/room_id}", "placeholder syntax"),
        ("https://example.org/" + "a" * 481, "500"),
    ],
)
def test_bad_click_url_templates(template: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_click_url_template(template)


def test_click_url_template_of_500_characters_is_accepted() -> None:
    template = "https://example.org/{room_id}/" + "a" * 470
    assert len(template) == 500

    check_click_url_template(template)


def test_coalesced_dm_ending_with_an_invite_is_titled_by_sender() -> None:
    invite = summary("member_invite_dm.1.full")
    message = render_batch(
        batch_of(invite, [(invite.room_id, Urgency.HIGH)]),
        DEFAULT,
    )
    assert message.title == "alice: 2 new messages"
    assert message.body == "alice invited you to a direct chat"


@pytest.mark.parametrize(
    ("msgtype", "body", "include_content", "expected"),
    [
        ("m.text", "hello", True, "hello"),
        ("m.notice", "bot says", True, "bot says"),
        ("m.text", "hello", False, None),
        ("m.image", "cat.png", True, None),
        ("m.file", "report.pdf", True, None),
    ],
)
def test_content_body_is_the_text_of_text_messages_only(
    msgtype: str, body: str, include_content: bool, expected: str | None
) -> None:
    event = summary("message_group_3_members.1.full", msgtype=msgtype, body=body)
    message = single(event, RegistrationOptions(include_content=include_content))
    assert message.content_body == expected


def test_content_body_is_none_for_encrypted_and_event_id_only() -> None:
    assert single(summary("encrypted_dm.1.full")).content_body is None
    assert single(summary_of(body("message_dm_2_members.0.eio"))).content_body is None
