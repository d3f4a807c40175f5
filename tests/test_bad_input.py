"""Bad input: one line on stderr, exit 2, nothing sent and nothing written to the log."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from broadcaster.sandbox import Sandbox
from broadcaster.testing import Result
from tests.support.input import assert_rejected, incidents, send_args


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"channel": "pager"}, ("unknown channel 'pager'", "webhook")),
        ({"message": "   "}, ("message", "must not be empty")),
        ({"message": ""}, ("message", "must not be empty")),
        ({"status": "panicking"}, ("status", "investigating")),
        ({"impact": "apocalyptic"}, ("impact",)),
        ({"title": None}, ("--title",)),
        ({"incident": "01NOPE"}, ("no incident with id '01NOPE'",)),
    ],
)
def test_bad_update_is_rejected_before_anything_is_sent(
    changes: dict[str, str | None],
    words: tuple[str, ...],
    cli: Callable[..., Result],
    embedded_config: Callable[..., Path],
    sandbox: Sandbox,
    database_url: str,
) -> None:
    config = embedded_config()
    before = incidents(database_url)
    assert_rejected(cli(*send_args(**changes), "--config", str(config)), sandbox, *words)
    assert incidents(database_url) == before


def test_missing_template_variable_names_template_and_line(
    cli: Callable[..., Result],
    embedded_config: Callable[..., Path],
    sandbox: Sandbox,
    database_url: str,
    tmp_path: Path,
) -> None:
    """One channel's template fails: no channel gets anything, not even those that rendered."""
    custom = tmp_path / "templates" / "email" / "default"
    custom.mkdir(parents=True)
    (custom / "subject.txt.j2").write_text("[{{ update.status }}]\n{{ incident.severity }} {{ incident.title }}\n")
    config = embedded_config(templates_dir=str(tmp_path / "templates"))
    before = incidents(database_url)
    result = cli(*send_args(), "--config", str(config))
    assert_rejected(result, sandbox, "email/default/subject.txt.j2", "line 2", "severity")
    assert incidents(database_url) == before


def test_template_syntax_error_names_template_and_line(
    cli: Callable[..., Result], embedded_config: Callable[..., Path], sandbox: Sandbox, tmp_path: Path
) -> None:
    custom = tmp_path / "templates" / "webhook" / "investigating"
    custom.mkdir(parents=True)
    (custom / "title.txt.j2").write_text("ok\n{% if %}\n")
    result = cli(*send_args(), "--config", str(embedded_config(templates_dir=str(tmp_path / "templates"))))
    assert_rejected(result, sandbox, "webhook/investigating/title.txt.j2", "line 2")


def test_malformed_toml_names_file_and_line(cli: Callable[..., Result], sandbox: Sandbox, tmp_path: Path) -> None:
    config = tmp_path / "broadcaster.toml"
    config.write_text('broker_url = ""\n[channels.blog\ntype = "webhook"\n')
    result = cli(*send_args(), "--config", str(config))
    assert_rejected(result, sandbox, str(config), "malformed TOML", "line 2")


def test_missing_environment_variable_names_the_key_not_the_value(
    cli: Callable[..., Result], sandbox: Sandbox, tmp_path: Path
) -> None:
    config = tmp_path / "broadcaster.toml"
    config.write_text(
        '[channels.blog]\ntype = "webhook"\nurl = "http://127.0.0.1:9/x"\nsecret = "${BLOG_SECRET_FOR_TEST}"\n'
    )
    result = cli(*send_args(), "--config", str(config), env={})
    assert_rejected(result, sandbox, "channels.blog.secret", "BLOG_SECRET_FOR_TEST is not set")


def test_invalid_channel_table_is_a_configuration_error(
    cli: Callable[..., Result], sandbox: Sandbox, tmp_path: Path
) -> None:
    config = tmp_path / "broadcaster.toml"
    config.write_text('[channels.blog]\ntype = "webhook"\nurl = "ftp://example"\nsecret = "whsec_AAAA"\n')
    assert_rejected(cli(*send_args(), "--config", str(config)), sandbox, "channels.blog.url", "http://")
    config.write_text('[channels.blog]\ntype = "pigeon"\n')
    assert_rejected(cli(*send_args(), "--config", str(config)), sandbox, "channels.blog.type", "pigeon")
    config.write_text('[channels.Blog_1]\ntype = "webhook"\n')
    assert_rejected(cli(*send_args(), "--config", str(config)), sandbox, "Blog_1", "lower-case")


def test_unknown_option_is_one_line(cli: Callable[..., Result], sandbox: Sandbox) -> None:
    assert_rejected(cli("send", "--shout"), sandbox, "--shout")


def test_a_secret_never_appears_in_an_error(cli: Callable[..., Result], sandbox: Sandbox, tmp_path: Path) -> None:
    config = tmp_path / "broadcaster.toml"
    config.write_text(
        '[channels.blog]\ntype = "webhook"\nurl = "http://127.0.0.1:9/x"\nsecret = "whsec_not-base64!!"\n'
    )
    result = cli(*send_args(), "--config", str(config))
    assert_rejected(result, sandbox, "channels.blog.secret")
    assert "not-base64" not in result.stderr
