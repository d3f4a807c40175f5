"""The slack channel's pure parts, in-process: its keys, and its text measured and cut as Block Kit counts."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from broadcaster.core.errors import RenderError
from channels import channel_types
from channels.slack.emulator import TOKEN
from channels.slack.text import cut, mrkdwn_escape, mrkdwn_unescape, parse_blocks, split_text, utf16_len

SLACK: Any = channel_types()["slack"]


# --- configuration (moved from tests/test_channel_slack.py) ------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "text"),
    [
        ({"token": TOKEN, "channel": "#incidents", "webhook_url": "https://hooks.slack.com/services/T/B/s3cret"},
         "give token and channel (a bot) or webhook_url (an incoming webhook), not both"),
        ({}, "needs token and channel (a bot) or webhook_url"),
        ({"token": TOKEN}, "a slack bot needs the channel"),
        ({"channel": "#incidents"}, "a slack bot needs its bot token"),
        ({"token": "s3cret-not-slack", "channel": "#incidents"}, "must be a Slack bot token"),
        ({"token": TOKEN, "channel": "Incidents Channel"}, "must be a channel ID like C0123ABCD or a channel name"),
        ({"webhook_url": "hooks.slack.com/s3cret"}, "must be the incoming webhook's URL"),
    ],
)  # fmt: skip
def test_configuration_takes_exactly_one_mode(table: dict[str, str], text: str) -> None:
    with pytest.raises(ValidationError) as caught:
        SLACK.Config.model_validate({"type": "slack", **table})
    message = str(caught.value.errors(include_input=False, include_url=False)[0]["msg"])
    assert text in message
    assert "s3cret" not in message


def test_configuration_defaults() -> None:
    config: Any = SLACK.Config.model_validate({"type": "slack", "token": TOKEN, "channel": "C0123"})
    assert config.api_base_url == "https://slack.com/api/"
    assert config.timeout.total_seconds() == 10
    assert TOKEN not in repr(config) and TOKEN not in str(config.model_dump())


# --- text ---------------------------------------------------------------------------------------------------


def test_mrkdwn_escapes_only_slack_s_control_characters_and_back() -> None:
    text = "<!channel> & <https://x.example|here> &lt;"
    assert mrkdwn_escape(text) == "&lt;!channel&gt; &amp; &lt;https://x.example|here&gt; &amp;lt;"
    assert mrkdwn_unescape(mrkdwn_escape(text)) == text


def test_lengths_are_utf16_units() -> None:
    assert utf16_len("abc") == 3
    assert utf16_len("🔥") == 2
    assert utf16_len("服") == 1


def test_cut_never_splits_a_character_an_entity_or_a_link() -> None:
    assert cut("short", 10) == "short"
    assert cut("🔥" * 10, 9) == "🔥" * 4 + "…"
    assert cut("see &amp; more text", 8) == "see…"  # not "see &am…"
    assert cut("see <https://example.com|link> text", 20) == "see…"
    assert cut("plain <text> here", 9, entities=False) == "plain <t…"


def test_split_text_breaks_at_paragraphs_then_lines_then_words() -> None:
    text = "first paragraph here\n\nsecond paragraph here"
    assert split_text(text, 30) == ["first paragraph here", "second paragraph here"]
    assert split_text("word " * 9 + "word", 20) == ["word word word word", "word word word word", "word word"]
    assert split_text("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]
    assert split_text("", 10) == [""]


def test_parse_blocks_refuses_what_is_no_block_list() -> None:
    assert parse_blocks('[{"type": "divider"}]') == [{"type": "divider"}]
    with pytest.raises(RenderError, match="invalid JSON"):
        parse_blocks("[{")
    with pytest.raises(RenderError, match="JSON array of blocks"):
        parse_blocks('{"type": "divider"}')
