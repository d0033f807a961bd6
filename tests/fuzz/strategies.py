"""Hypothesis strategies for hostile requests. Bodies are built as JSON *text*, so that what no
`json.dumps` would write reaches the server: lone surrogate escapes, raw control characters,
invalid UTF-8, 1e400, a 5,000-digit integer, nesting thousands deep."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

from tests.conftest import FIXTURES

FIXTURE_DOCUMENTS = {p.stem: json.loads(p.read_text()) for p in sorted(FIXTURES.glob("*.json"))}
PLACEHOLDER = "__fuzz_placeholder__"
ROUTES = (
    "/_matrix/push/v1/notify",
    "/api/v1/pushkeys",
    "/api/v1/pushkeys/{pushkey}",
    "/api/v1/pushkeys/{pushkey}/test",
    "/api/v1/pushkeys/{pushkey}/deliveries",
    "/api/v1/webpush/vapid-public-key",
    "/api/client/push_token_report",
)
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")


# --- JSON text ----------------------------------------------------------------------------------

surrogate_escapes = st.integers(0xD800, 0xDFFF).map(lambda c: f"\\u{c:04x}")
string_pieces = st.one_of(
    # Valid text, escaped as JSON (st.text never yields a surrogate itself).
    st.text(max_size=12).map(lambda t: json.dumps(t, ensure_ascii=False)[1:-1]),
    surrogate_escapes,
    st.sampled_from(["\\u0000", "\\n", "\\\\", '\\"', "\\ud83d\\ude00", "\\uDBFF\\uDFFF", "\\"]),
    # A raw control character: not allowed in a JSON string.
    st.characters(min_codepoint=0, max_codepoint=0x1F),
    st.sampled_from(["[", "{", "]", "}", '"', "\u2028", "\ufeff", "\U0001f600", "é"]),
    st.sampled_from([255, 256, 1000, 5000, 70_000]).map(lambda n: "x" * n),
)
json_strings = st.lists(string_pieces, max_size=6).map(lambda p: '"' + "".join(p) + '"')
json_numbers = st.one_of(
    st.sampled_from(
        [
            "1e400",
            "-1e400",
            "1E-400",
            "1" + "0" * 5000,
            "9" * 4300,
            "-" + "9" * 400,
            "NaN",
            "Infinity",
            "-Infinity",
            "-0",
            "0.0",
            "2147483648",
            "9007199254740993",
            "01",
            "1.",
            ".5",
            "0x10",
        ]
    ),
    st.integers().map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
)
json_scalars = st.one_of(
    json_strings, json_numbers, st.sampled_from(["true", "false", "null", "", "nul", "True"])
)


def _array(items: list[str]) -> str:
    return "[" + ",".join(items) + "]"


def _object(pairs: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f"{k}:{v}" for k, v in pairs) + "}"


json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4).map(_array),
        st.lists(st.tuples(json_strings, children), max_size=4).map(_object),
    ),
    max_leaves=8,
)
deep_nesting = st.one_of(
    st.integers(1, 3000).map(lambda n: "[" * n + "]" * n),
    st.integers(1, 3000).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.integers(1, 3000).map(lambda n: "[" * n),
    st.integers(1, 300).map(lambda n: '[{"a":' * n + "null" + "}]" * n),
)
hostile_values = st.one_of(json_values, deep_nesting)


def corrupt(raw: bytes, position: int, junk: bytes) -> bytes:
    """Insert bytes (maybe invalid UTF-8) somewhere in a body."""
    at = position % (len(raw) + 1)
    return raw[:at] + junk + raw[at:]


invalid_utf8 = st.sampled_from(
    [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80", b"\xe2\x82", b"\x00"]
)


# --- Mutations of the captured Synapse bodies ---------------------------------------------------


def paths(document: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a document: object keys and array indexes, the root excluded."""
    found: list[tuple[Any, ...]] = []
    if isinstance(document, dict):
        for key, value in document.items():
            found.append((*prefix, key))
            found.extend(paths(value, (*prefix, key)))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            found.append((*prefix, index))
            found.extend(paths(value, (*prefix, index)))
    return found


def mutate(draw: st.DrawFn, document: Any, extra: st.SearchStrategy[str]) -> bytes:
    """`document` as JSON text, with a hostile value put at, added beside or removed from one
    to three random places (new values from `extra` too), and sometimes bytes that are no UTF-8
    inserted."""
    document = json.loads(json.dumps(document))
    replacements = st.one_of(hostile_values, extra)
    for _ in range(draw(st.integers(1, 3))):
        places = paths(document)
        if not places:
            break
        where = draw(st.sampled_from(places))
        parent = document
        for step in where[:-1]:
            parent = parent[step]
        operation = draw(st.sampled_from(["replace", "replace", "add", "delete"]))
        if operation == "delete":
            del parent[where[-1]]
        elif operation == "add" and isinstance(parent, dict):
            key = draw(st.sampled_from(["id", "x", "content", "counts", "url", "\u00e9"]))
            parent[key] = PLACEHOLDER
        else:
            parent[where[-1]] = PLACEHOLDER
    text = json.dumps(document, ensure_ascii=False)
    while f'"{PLACEHOLDER}"' in text:
        text = text.replace(f'"{PLACEHOLDER}"', draw(replacements), 1)
    raw = text.encode("utf-8")
    if draw(st.integers(0, 9)) == 0:
        raw = corrupt(raw, draw(st.integers(0, len(raw))), draw(invalid_utf8))
    return raw


@st.composite
def mutated_fixtures(draw: st.DrawFn, pushkeys: list[str]) -> bytes:
    """A captured Synapse notify body, mutated; often for a registered pushkey, so that the
    whole notify path runs (summary, store), not only parsing."""
    name = draw(st.sampled_from(sorted(FIXTURE_DOCUMENTS)))
    document = json.loads(json.dumps(FIXTURE_DOCUMENTS[name]))
    registered = draw(st.booleans())
    if pushkeys and registered:
        for device in document["notification"]["devices"]:
            device["pushkey"] = draw(st.sampled_from(pushkeys))
    return mutate(draw, document, st.sampled_from(['"' + "x" * 300 + '"', "1e400"]))


# --- Registration and push token report bodies ---------------------------------------------------

hosts = st.sampled_from(
    [
        "127.0.0.1",
        "localhost",
        "169.254.169.254",
        "[fd00:ec2::254]",
        "[::1]",
        "[::ffff:169.254.169.254]",
        "[::ffff:7f00:1]",
        "[64:ff9b::a9fe:a9fe]",
        "[2002:a9fe:a9fe::]",
        "[fe80::1%25eth0]",
        "[::]",
        "0.0.0.0",  # noqa: S104 - a target URL to refuse, not an address we bind
        "10.0.0.1",
        "100.64.0.1",
        "224.0.0.1",
        "255.255.255.255",
        "2130706433",
        "0x7f.0.0.1",
        "0177.0.0.1",
        "127.1",
        "metadata.google.internal",
        "xn--n3h.test",
        "\u00fcn\u00efcode.test",
        "a" * 64 + ".test",
        "a" * 300,
        "",
        "[::1",
        "ex ample.test",
        "host\u3002test",
        "[v1.x]",
    ]
)
url_schemes = st.sampled_from(["http", "https", "HTTPS", "file", "ftp", "gopher", "", "javascript"])
userinfo = st.sampled_from(["", "", "user@", "user:pass@", "@", "a:b@c@", ":@"])
ports = st.sampled_from(["", "", ":80", ":0", ":65536", ":-1", ":abc", ":1", ":99999999999"])
url_paths = st.sampled_from(
    ["", "/", "/gotify", "/%00", "/..%2f..", "#frag", "?q=1", "/" + "a" * 3000, "/\u00e9", "\\"]
)


@st.composite
def hostile_urls(draw: st.DrawFn, valid_port: int) -> str:
    """A URL string (JSON-escaped, without quotes) from parts that each break a rule."""
    port = draw(st.one_of(ports, st.just(f":{valid_port}")))
    url = (
        f"{draw(url_schemes)}://{draw(userinfo)}{draw(hosts)}{port}{draw(url_paths)}"
        if draw(st.integers(0, 5))
        else draw(st.text(max_size=40))
    )
    escaped = json.dumps(url, ensure_ascii=False)[1:-1]
    if draw(st.integers(0, 7)) == 0:
        escaped += draw(surrogate_escapes)
    return escaped


def _fill(
    template: dict[str, Any], draw: st.DrawFn, slots: dict[str, st.SearchStrategy[str]]
) -> bytes:
    """`template` as JSON, each `slots` placeholder replaced by drawn JSON text."""
    text = json.dumps(template, ensure_ascii=False)
    for name, strategy in slots.items():
        text = text.replace(f'"<{name}>"', draw(strategy))
    return text.encode("utf-8")


def valid_registrations(port: int) -> list[dict[str, Any]]:
    """Bodies that register (targets on 127.0.0.1; the battery runs with private targets)."""
    base = f"http://127.0.0.1:{port}"
    common: dict[str, Any] = {
        "delay_seconds": 30,
        "options": {"click_url": "https://example.org/{room_id}", "priority": {"high": 5}},
        "pusher": {"app_id": "org.example.fuzz", "device_display_name": "fuzz", "lang": "en"},
    }
    return [
        {"backend": "gotify", "target": {"url": base + "/gotify", "token": "AppToken.Valid1"}},
        {"backend": "ntfy", "target": {"url": base + "/fuzz-topic", "token": "tk_0123456789"}},
        {"backend": "unifiedpush", "target": {"endpoint": base + "/up/fuzz"}, **common},
        {"backend": "gotify", "target": {"url": base, "token": "AppToken.Valid1"}, **common},
    ]


@st.composite
def registration_bodies(draw: st.DrawFn, valid_port: int) -> bytes:
    """Half: a body that registers, with one to three places made hostile; half: every field
    drawn from hostile values and URLs."""
    if draw(st.booleans()):
        document = draw(st.sampled_from(valid_registrations(valid_port)))
        urls = hostile_urls(valid_port).map(lambda u: f'"{u}"')
        return mutate(draw, document, urls)
    backend = draw(
        st.sampled_from(
            ["gotify", "ntfy", "bark", "webhook", "acrobits", "webpush", "unifiedpush", "x", ""]
        )
    )
    url = draw(hostile_urls(valid_port)).join('""')
    maybe = st.one_of(hostile_values, st.just(url))
    template: dict[str, Any] = {
        "backend": backend if draw(st.integers(0, 9)) else "<backend>",
        "target": {
            "url": "<url>",
            "server": "<url>",
            "endpoint": "<url>",
            "token": draw(st.sampled_from(["AppToken.Valid1", "<token>"])),
            "topic": "<token>",
            "device_key": "<token>",
            "secret": "<token>",
            "selector": "<token>",
            "headers": "<headers>",
            "keys": "<keys>",
        },
        "delay_seconds": "<delay>",
        "options": "<options>",
        "pusher": "<pusher>",
    }
    if draw(st.booleans()):
        template["homeserver"] = "<url>"
    slots = {
        "backend": hostile_values,
        "url": maybe,
        "token": st.one_of(json_strings, hostile_values),
        "headers": hostile_values,
        "keys": hostile_values,
        "delay": st.one_of(json_numbers, hostile_values),
        "options": st.one_of(
            hostile_values,
            st.builds(
                lambda click, prio: f'{{"click_url":{click},"priority":{prio}}}',
                st.one_of(json_strings, st.just(url)),
                hostile_values,
            ),
        ),
        "pusher": hostile_values,
    }
    return _fill(template, draw, slots)


@st.composite
def push_token_reports(draw: st.DrawFn, valid_port: int) -> bytes:
    if draw(st.booleans()):
        document = {
            "selector": "0123456789abcdef0123456789abcdef",
            "token_msgs": "a1b2c3d4e5f6",
            "appid_msgs": "com.example.softphone",
            "token_calls": "f6e5d4c3b2a1",
            "appid_calls": "com.example.softphone.voip",
        }
        return mutate(draw, document, hostile_urls(valid_port).map(lambda u: f'"{u}"'))
    url = draw(hostile_urls(valid_port)).join('""')
    template = {
        "selector": "<v1>",
        "token_msgs": "<v2>",
        "appid_msgs": "<v3>",
        "token_calls": "<v4>",
        "app_id_calls": "<v5>",
        "url": "<url>",
    }
    good = st.sampled_from(['"0123456789abcdef"', '"com.example.app"', '""'])
    slots: dict[str, st.SearchStrategy[str]] = {
        f"v{i}": st.one_of(good, json_strings, hostile_values) for i in range(1, 6)
    }
    slots["url"] = st.one_of(st.just(url), hostile_values)
    return _fill(template, draw, slots)


# --- Any route, any method ----------------------------------------------------------------------

path_segments = st.one_of(
    st.text(max_size=30).map(lambda t: quote(t, safe="")),
    st.binary(max_size=12).map(lambda b: quote(b, safe="")),
    st.sampled_from(["%ED%A0%80", "%FF", "%00", "..", "%2F", "x" * 600, "mxp_" + "A" * 43]),
)


@st.composite
def paths_and_queries(draw: st.DrawFn) -> str:
    template = draw(st.sampled_from((*ROUTES, "/", "/{pushkey}", "/api/v1/{pushkey}/x")))
    path = template.replace("{pushkey}", draw(path_segments))
    if draw(st.booleans()):
        path += "/"
    if draw(st.booleans()):
        key = draw(st.sampled_from(["homeserver", "limit", "x", "homeserver%00"]))
        path += (
            f"?{key}="
            + quote(draw(st.text(max_size=30)), safe="")
            + draw(st.sampled_from(["", "&homeserver=http://[::1", "&&=", "%"]))
        )
    return path


authorizations = st.one_of(
    st.sampled_from(
        [
            None,
            "Bearer test-admin-token",
            "Bearer bob-token",
            "Bearer ",
            "Basic dGVzdA==",
            "bearer   test-admin-token  ",
            "Bearer " + "t" * 5000,
        ]
    ),
    # What an HTTP header can carry: latin-1 text.
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40).map(
        lambda t: "Bearer " + t
    ),
)


@st.composite
def any_bodies(draw: st.DrawFn, valid_port: int) -> bytes:
    body: bytes = draw(
        st.one_of(
            st.just(b""),
            hostile_values.map(lambda t: t.encode("utf-8")),
            st.binary(max_size=64),
            registration_bodies(valid_port),
            push_token_reports(valid_port),
            mutated_fixtures([]),
        )
    )
    return body
