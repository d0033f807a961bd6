"""Local mode's settings from the environment: a bad value names its variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from mxpush.errors import ConfigError
from mxpush_local.__main__ import email_line, main
from mxpush_local.gateway import LocalGateway, LocalSettings
from mxpush_local.state import secrets_file, write_secrets


@pytest.mark.parametrize(("raw", "value"), [("0", 0), ("3600", 3600), (" 7 ", 7), ("", 25)])
def test_delay_is_read_within_bounds(raw: str, value: int) -> None:
    assert LocalSettings.from_env({"MXPUSH_DELAY_SECONDS": raw}).delay_seconds == value


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MXPUSH_DELAY_SECONDS": "abc"}, "MXPUSH_DELAY_SECONDS must be a whole number, got 'abc'"),
        ({"MXPUSH_DELAY_SECONDS": "2.5"}, "MXPUSH_DELAY_SECONDS must be a whole number"),
        ({"MXPUSH_DELAY_SECONDS": "3601"}, "MXPUSH_DELAY_SECONDS must be between 0 and 3600"),
        ({"MXPUSH_DELAY_SECONDS": "-1"}, "MXPUSH_DELAY_SECONDS must be between 0 and 3600"),
        ({"PORT": "http"}, "PORT must be a whole number, got 'http'"),
        ({"PORT": "70000"}, "PORT must be between 0 and 65535"),
    ],
)
def test_a_bad_number_names_its_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match="^" + message):
        LocalSettings.from_env(env)


def test_make_run_says_which_setting_is_bad(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MXPUSH_DELAY_SECONDS", "abc")
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err == "mxpush: bad setting: MXPUSH_DELAY_SECONDS must be a whole number, got 'abc'\n"


def test_email_settings_and_what_make_run_prints_of_them() -> None:
    settings = LocalSettings.from_env(
        {
            "MXPUSH_SMTP_URL": "smtp://me:s3cret@mail.example.org:587",
            "MXPUSH_SMTP_STARTTLS": "false",
            "MXPUSH_EMAIL_FROM": "push@example.org",
        }
    )
    assert (settings.smtp_starttls, settings.email_from) == (False, "push@example.org")
    assert "s3cret" not in repr(settings)
    line = email_line(settings)
    assert line == (
        "email: through smtp://me@mail.example.org:587, STARTTLS off, from push@example.org"
    )
    assert email_line(LocalSettings()) == (
        "email: off (set MXPUSH_SMTP_URL and MXPUSH_EMAIL_FROM to mail digests)"
    )
    bad = email_line(LocalSettings(smtp_url="http://me:s3cret@x"))
    assert bad.startswith("email: off (MXPUSH_SMTP_URL: must start with smtp://")
    assert "s3cret" not in bad


def test_the_unsubscribe_key_is_generated_once_and_kept(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    first = LocalGateway(LocalSettings(state=state))  # not started: only one may run per process
    assert len(first.unsubscribe_secret) >= 32
    assert first._secrets_to_keep["unsubscribe_secret"] == first.unsubscribe_secret
    write_secrets(secrets_file(Path(state)), {"unsubscribe_secret": "kept-key-0123456789abcdef"})
    assert LocalGateway(LocalSettings(state=state)).unsubscribe_secret == (
        "kept-key-0123456789abcdef"
    )
    chosen = LocalSettings(state=state, unsubscribe_secret="chosen-key-0123456789")
    assert LocalGateway(chosen).unsubscribe_secret == "chosen-key-0123456789"
