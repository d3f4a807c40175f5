"""Settings validation: each mistake in a configuration file is one line naming its key (broadcaster.settings).

(tests/test_settings.py covers the sources: the file, the environment, options and ``${NAME}`` variables.)
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from broadcaster.core.errors import ConfigError
from broadcaster.settings import load_settings
from tests.support.settings import SECRET

BLOG = f'[channels.blog]\ntype = "webhook"\nurl = "https://blog.example.com/hook"\nsecret = "{SECRET}"\n'


def refused(tmp_path: Path, text: str) -> str:
    """The error ``load_settings`` gives for a file of ``text``, with the file's name as ``FILE``."""
    path = tmp_path / "broadcaster.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    return str(caught.value).replace(str(path), "FILE")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('[reminders]\nafter = "0s"\n', "reminders.after: must be longer than 0s"),
        ('[reminders]\nafter = { critical = "15m", severe = "5m" }\n',
         "reminders.after: impacts are none, minor, major, critical, not severe"),
        ('[reminders]\nholding = ["major", "huge"]\n',
         "reminders.holding: impacts are none, minor, major, critical, not huge"),
        ('[reminders]\ncheck_every = "0s"\n', "reminders.check_every: must be longer than 0s"),
        ('[subscribers]\nsigning_key = "short"\n',
         "subscribers.signing_key: must be at least 16 characters (e.g. the output of `openssl rand -hex 32`)"),
        ('[subscribers]\napi_url = "status-api.example.com"\n',
         "subscribers.api_url: must start with https:// (or http://)"),
        ("[delivery]\nbatch_size = 5000\n", "delivery.batch_size: Input should be less than or equal to 1000"),
        ("[api]\nmax_body_bytes = 10\n", "api.max_body_bytes: Input should be greater than or equal to 1024"),
        ('[retry]\nbackoff = "soon"\n',
         "retry.backoff: not a duration: 'soon' (write it like 45s, 30m, 6h or 250ms)"),
        ('brokr_url = "redis://"\n', "brokr_url: Extra inputs are not permitted"),
    ],
)  # fmt: skip
def test_a_bad_value_is_one_line_naming_the_file_and_the_key(tmp_path: Path, text: str, error: str) -> None:
    assert refused(tmp_path, text) == f"configuration error: FILE: {error}"


def test_a_channel_name_is_lower_case_letters_digits_and_dashes(tmp_path: Path) -> None:
    assert refused(tmp_path, BLOG.replace("channels.blog", "channels.Blog")) == (
        "configuration error: FILE: channels: channel name 'Blog' may hold only lower-case letters, digits and '-'"
    )


@pytest.mark.parametrize(("line", "given"), [('type = "pagerduty"\n', "'pagerduty'"), ('url = "x"\n', "None")])
def test_a_channel_of_no_known_type_lists_the_types(tmp_path: Path, line: str, given: str) -> None:
    error = refused(tmp_path, "[channels.pager]\n" + line)
    assert error.startswith("configuration error: FILE: channels.pager.type must be one of ")
    assert error.endswith(f", not {given}")
    listed = error.split(" one of ")[1].split(", not ")[0].split(", ")
    assert {"email", "slack", "sms", "twitter", "webhook"} <= set(listed)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (("https://blog.example.com/hook", "ftp://blog.example.com/hook"),
         "channels.blog.url: must start with http:// or https://"),
        ((SECRET, "hunter2"),
         "channels.blog.secret: must be a Standard Webhooks secret: whsec_ followed by base64 (broadcaster secret)"),
    ],
)  # fmt: skip
def test_a_channel_s_own_keys_are_checked_by_its_type(tmp_path: Path, change: tuple[str, str], error: str) -> None:
    assert refused(tmp_path, BLOG.replace(*change)) == f"configuration error: FILE: {error}"


def test_a_channel_s_rate_limit_says_how_to_write_one(tmp_path: Path) -> None:
    assert refused(tmp_path, BLOG + 'rate_limit = "fast"\n') == (
        "configuration error: FILE: channels.blog.rate_limit: not a rate limit: 'fast' (write it like 1/s or 300/15m)"
    )


def test_a_file_that_is_not_toml_or_not_there_is_named(tmp_path: Path) -> None:
    assert refused(tmp_path, "retry = {\n").startswith("FILE: malformed TOML: ")
    with pytest.raises(ConfigError, match=r"^configuration file .*missing\.toml not found$"):
        load_settings(tmp_path / "missing.toml")


def test_the_reminder_cadence_and_holding_statements_are_per_impact(tmp_path: Path) -> None:
    path = tmp_path / "broadcaster.toml"
    path.write_text('[reminders]\nafter = { critical = "15m", major = "30m" }\nholding = ["critical"]\n')
    reminders = load_settings(path).reminders
    assert reminders.after_for("critical") == timedelta(minutes=15)
    assert reminders.after_for("minor") is None  # not in the table: no reminders
    assert reminders.holds_for("critical") and not reminders.holds_for("major")


def test_one_cadence_and_holding_true_apply_to_every_impact(tmp_path: Path) -> None:
    path = tmp_path / "broadcaster.toml"
    path.write_text('[reminders]\nafter = "20m"\nholding = true\n')
    reminders = load_settings(path).reminders
    assert [reminders.after_for(i) for i in ("none", "critical")] == [timedelta(minutes=20)] * 2
    assert reminders.holds_for("none") and reminders.holds_for("critical")


def test_the_defaults_need_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./broadcaster.toml
    settings = load_settings()
    assert settings.embedded and settings.database_url == "sqlite:///broadcaster.db"
    assert settings.reminders.after_for("major") == timedelta(minutes=30)
    assert not settings.reminders.holds_for("critical")
    assert settings.channels == {}


def test_the_api_url_loses_its_trailing_slash(tmp_path: Path) -> None:
    path = tmp_path / "broadcaster.toml"
    path.write_text('[subscribers]\napi_url = "https://status-api.example.com/"\n')
    assert load_settings(path).subscribers.api_url == "https://status-api.example.com"


@pytest.mark.parametrize(
    ("options", "embedded", "shared"),
    [
        ({}, True, ""),
        ({"broker_url": "redis://127.0.0.1:6379/0"}, False, "redis://127.0.0.1:6379/0"),
        ({"broker_url": "amqp://guest@127.0.0.1//"}, False, ""),
        ({"broker_url": "amqp://guest@127.0.0.1//", "redis_url": "redis://127.0.0.1:6379/1"}, False,
         "redis://127.0.0.1:6379/1"),
    ],
)  # fmt: skip
def test_the_workers_share_their_guards_in_redis_when_there_is_one(
    options: dict[str, str], embedded: bool, shared: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No broker: embedded mode. A Redis broker holds the guards too; RabbitMQ needs ``redis_url`` for them."""
    monkeypatch.chdir(tmp_path)  # no ./broadcaster.toml
    settings = load_settings(**options)
    assert settings.embedded is embedded
    assert settings.shared_state_url == shared
