"""`Settings.from_env` with explicit environments (never the process's own)."""

from __future__ import annotations

import pytest

from mxpush.config import Settings
from mxpush.errors import ConfigError


def test_defaults() -> None:
    settings = Settings.from_env({})

    assert settings == Settings(
        table_name="mxpush",
        slot_machine_arn="",
        region="us-east-1",
        default_delay_seconds=25,
        allowed_homeservers=(),
        allow_private_targets=False,
        admin_token=None,
        admin_token_parameter=None,
        public_url=None,
        log_retention_days=7,
    )


def test_values_are_read() -> None:
    arn = "arn:aws:states:eu-west-1:123456789012:stateMachine:mxpush"
    settings = Settings.from_env(
        {
            "MXPUSH_TABLE_NAME": "mxpush-prod",
            "MXPUSH_SLOT_MACHINE_ARN": arn,
            "MXPUSH_RETRY_MACHINE_ARN": arn + "-retry",
            "MXPUSH_SENDER_FUNCTIONS": '{"gotify": "mxpush-GotifySender"}',
            "AWS_REGION": "eu-west-1",
            "MXPUSH_DELAY_SECONDS": "90",
            "MXPUSH_ADMIN_TOKEN": "op-secret",
            "MXPUSH_ADMIN_TOKEN_PARAMETER": "/mxpush/admin-token",
            "MXPUSH_PUBLIC_URL": "https://Push.Example.org/gw/",
            "MXPUSH_LOG_RETENTION_DAYS": "30",
        }
    )

    assert settings.table_name == "mxpush-prod"
    assert settings.slot_machine_arn == arn
    assert settings.retry_machine_arn == arn + "-retry"
    assert settings.sender_functions == {"gotify": "mxpush-GotifySender"}
    assert settings.region == "eu-west-1"
    assert settings.default_delay_seconds == 90
    assert settings.admin_token == "op-secret"
    assert settings.admin_token_parameter == "/mxpush/admin-token"
    assert settings.public_url == "https://push.example.org/gw"
    assert settings.log_retention_days == 30


def test_region_falls_back_to_aws_default_region() -> None:
    assert Settings.from_env({"AWS_DEFAULT_REGION": "ap-south-1"}).region == "ap-south-1"
    both = {"AWS_REGION": "eu-north-1", "AWS_DEFAULT_REGION": "ap-south-1"}
    assert Settings.from_env(both).region == "eu-north-1"


def test_empty_admin_token_means_none() -> None:
    assert Settings.from_env({"MXPUSH_ADMIN_TOKEN": ""}).admin_token is None


@pytest.mark.parametrize(("raw", "value"), [("0", 0), ("3600", 3600), (" 25 ", 25), ("", 25)])
def test_delay_within_bounds(raw: str, value: int) -> None:
    assert Settings.from_env({"MXPUSH_DELAY_SECONDS": raw}).default_delay_seconds == value


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("3601", "between 0 and 3600"),
        ("-1", "between 0 and 3600"),
        ("abc", "must be a whole number"),
        ("2.5", "must be a whole number"),
    ],
)
def test_delay_out_of_bounds(raw: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        Settings.from_env({"MXPUSH_DELAY_SECONDS": raw})

    assert "MXPUSH_DELAY_SECONDS" in str(caught.value)


@pytest.mark.parametrize("raw", ["0", "366", "x"])
def test_log_retention_out_of_bounds(raw: str) -> None:
    with pytest.raises(ConfigError, match="MXPUSH_LOG_RETENTION_DAYS"):
        Settings.from_env({"MXPUSH_LOG_RETENTION_DAYS": raw})


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("1", True),
        ("true", True),
        ("TRUE", True),
        (" yes ", True),
        ("on", True),
        ("0", False),
        ("false", False),
        ("No", False),
        ("off", False),
        ("", False),
    ],
)
def test_booleans(raw: str, value: bool) -> None:
    settings = Settings.from_env({"MXPUSH_ALLOW_PRIVATE_TARGETS": raw})

    assert settings.allow_private_targets is value


@pytest.mark.parametrize("raw", ["maybe", "2", "enabled"])
def test_bad_boolean(raw: str) -> None:
    with pytest.raises(ConfigError, match="MXPUSH_ALLOW_PRIVATE_TARGETS"):
        Settings.from_env({"MXPUSH_ALLOW_PRIVATE_TARGETS": raw})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("HTTPS://Matrix.Example.org/", ("https://matrix.example.org",)),
        ("https://matrix.example.org", ("https://matrix.example.org",)),
        ("http://127.0.0.1:8008", ("http://127.0.0.1:8008",)),
        ("https://example.org/matrix//", ("https://example.org/matrix",)),
        (
            " https://a.example.org/ , ,HTTP://B.example.org:8448 ",
            ("https://a.example.org", "http://b.example.org:8448"),
        ),
        ("", ()),
        (" , ", ()),
    ],
)
def test_homeserver_list_is_normalised(raw: str, expected: tuple[str, ...]) -> None:
    settings = Settings.from_env({"MXPUSH_ALLOWED_HOMESERVERS": raw})

    assert settings.allowed_homeservers == expected


@pytest.mark.parametrize(
    "raw",
    [
        "matrix.example.org",
        "ftp://matrix.example.org",
        "https://",
        "https://matrix.example.org/?x=1",
        "https://matrix.example.org/#frag",
        "https://ok.example.org,bad.example.org",
    ],
)
def test_bad_homeserver_entry(raw: str) -> None:
    with pytest.raises(ConfigError, match="MXPUSH_ALLOWED_HOMESERVERS"):
        Settings.from_env({"MXPUSH_ALLOWED_HOMESERVERS": raw})


@pytest.mark.parametrize("raw", ["push.example.org", "https://push.example.org/?a=b"])
def test_bad_public_url(raw: str) -> None:
    with pytest.raises(ConfigError, match="MXPUSH_PUBLIC_URL"):
        Settings.from_env({"MXPUSH_PUBLIC_URL": raw})


@pytest.mark.parametrize("value", ["{", "[1]", '"gotify"'])
def test_sender_functions_must_be_a_json_object(value: str) -> None:
    with pytest.raises(ConfigError, match="MXPUSH_SENDER_FUNCTIONS"):
        Settings.from_env({"MXPUSH_SENDER_FUNCTIONS": value})
