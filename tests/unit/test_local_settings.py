"""Local mode's settings from the environment: a bad value names its variable."""

from __future__ import annotations

import pytest

from mxpush.errors import ConfigError
from mxpush_local.__main__ import main
from mxpush_local.gateway import LocalSettings


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
