"""Configuration: TOML, environment, ${NAME} variables, durations and per-channel overrides."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from broadcaster.core.errors import ConfigError
from broadcaster.core.units import RateLimit, parse_duration, parse_rate_limit
from broadcaster.settings import load_settings

BLOG = '[channels.blog]\ntype = "webhook"\nurl = "https://blog.example.com/hook"\nsecret = "${BLOG_SECRET}"\n'
SECRET = "whsec_c2VjcmV0LWtleS1mb3ItdGVzdHM="


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BLOG_SECRET", SECRET)
    for name in ("BROADCASTER_CONFIG", "BROADCASTER_BROKER_URL", "BROADCASTER_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "broadcaster.toml"
    path.write_text('database_url = "sqlite:///from-file.db"\n[retry]\nmax_attempts = 4\nbackoff = "250ms"\n' + BLOG)
    return path


def test_file_values_and_variables_are_read(config: Path) -> None:
    settings = load_settings(config)
    assert settings.database_url == "sqlite:///from-file.db"
    assert settings.retry.max_attempts == 4
    assert settings.retry.backoff == timedelta(milliseconds=250)
    assert settings.channels["blog"].secret.get_secret_value() == SECRET  # type: ignore[attr-defined]
    assert SECRET not in repr(settings)


def test_environment_beats_the_file_and_options_beat_the_environment(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BROADCASTER_DATABASE_URL", "sqlite:///from-env.db")
    monkeypatch.setenv("BROADCASTER_RETRY__MAX_ATTEMPTS", "2")
    monkeypatch.setenv("BROADCASTER_CHANNELS__BLOG__URL", "https://other.example.com/hook")
    settings = load_settings(config)
    assert settings.database_url == "sqlite:///from-env.db"
    assert settings.retry.max_attempts == 2
    assert settings.retry.backoff == timedelta(milliseconds=250)  # the file's, not overridden
    assert settings.channels["blog"].url == "https://other.example.com/hook"  # type: ignore[attr-defined]
    assert load_settings(config, database_url="sqlite:///from-option.db").database_url == "sqlite:///from-option.db"


def test_config_file_from_environment_variable(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROADCASTER_CONFIG", str(config))
    assert load_settings().retry.max_attempts == 4


def test_channel_retry_overrides_only_its_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLOG_SECRET", SECRET)
    path = tmp_path / "b.toml"
    path.write_text(BLOG + 'retry = { max_attempts = 9 }\nrate_limit = "300/15m"\n')
    settings = load_settings(path)
    retry = settings.retry_for("blog")
    assert retry.max_attempts == 9 and retry.backoff == timedelta(seconds=2)
    assert settings.channels["blog"].rate_limit == RateLimit(300, 900.0)


def test_missing_variable_names_the_key(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BLOG_SECRET")
    with pytest.raises(ConfigError, match=r"channels\.blog\.secret: environment variable BLOG_SECRET is not set"):
        load_settings(config)


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "b.toml"
    path.write_text("[retry]\nmax_attempt = 3\n")
    with pytest.raises(ConfigError, match=r"retry\.max_attempt: Extra inputs are not permitted"):
        load_settings(path)


def test_fallback_must_name_a_channel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLOG_SECRET", SECRET)
    path = tmp_path / "b.toml"
    path.write_text(BLOG + 'fallback = ["nowhere"]\n')
    with pytest.raises(ConfigError, match="fallback names unknown channel 'nowhere'"):
        load_settings(path)


@pytest.mark.parametrize(
    ("text", "seconds"), [("45s", 45), ("30m", 1800), ("6h", 21600), ("250ms", 0.25), (3, 3), ("1.5s", 1.5)]
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["5", "soon", "-1s", "1 week"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_rate_limits() -> None:
    assert parse_rate_limit("1/s") == RateLimit(1, 1.0)
    assert parse_rate_limit("300/15m").interval == 3.0
    with pytest.raises(ValueError, match="rate limit"):
        parse_rate_limit("0/s")


def test_the_example_configuration_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """config/broadcaster.example.toml is valid once its variables are set."""
    example = Path(__file__).parent.parent / "config" / "broadcaster.example.toml"
    for line in (example.parent / "example.env").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            monkeypatch.setenv(name, value or "x")
    monkeypatch.setenv("BLOG_WEBHOOK_SECRET", SECRET)
    monkeypatch.delenv("BROADCASTER_CONFIG")
    settings = load_settings(example)
    assert set(settings.channels) == {"blog", "customers", "x", "ops", "sms"}
