"""Every update of the corpus (tests/corpus/updates.json) renders well for every channel.

Tweets weigh at most 280 and keep the link; SMS use the fewest segments; nothing shows "None", template
syntax, or a label with nothing after it.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from broadcaster.domain.broadcasts import render_context
from broadcaster.rendering import render
from broadcaster.sandbox import Sandbox
from broadcaster.settings import load_settings
from broadcaster.store.models import Incident, Update
from channels import Message, channel_types
from channels.sms.gsm import GSM7, count_segments, to_gsm
from channels.twitter.text import weighted_length

CORPUS = json.loads((Path(__file__).parent / "corpus" / "updates.json").read_text())
PUBLIC_URL = "https://status.example.com"
#: a label followed by nothing: "Affected: " at a line end, "Impact:" alone
EMPTY_LABEL = re.compile(r"(?m)^(?:Affected|Impact|Components|Status):\s*$|\(\s*\)")


def render_for(sandbox: Sandbox, kind: str, entry: dict[str, Any], **extra: Any) -> tuple[Message, str]:
    config = channel_types()[kind].Config.model_validate({**sandbox.channel_config(kind), **extra})
    channel = channel_types()[kind](kind, config)
    now = datetime.now(UTC)
    incident = Incident(
        id="01JCORPUS0000000000000000",
        title=entry["title"],
        status=entry["status"],
        impact=entry["impact"],
        components=entry["components"],
        created_at=now,
    )
    update = Update(id="01JUPDATE0000000000000000", status=entry["status"], message=entry["message"], created_at=now)
    settings = load_settings(public_url=PUBLIC_URL)
    context = render_context(settings, "incident.update", incident, update, [update])
    return render(channel, entry["status"], context), f"{PUBLIC_URL}/incidents/{incident.id}"


def test_the_corpus_is_varied() -> None:
    assert len(CORPUS) >= 20
    messages = " ".join(e["message"] + e["title"] for e in CORPUS)
    assert re.search(r"[\u3040-\u30ff\u4e00-\u9fff]", messages)  # CJK
    assert re.search(r"[\U0001F300-\U0001FAFF]", messages)  # emoji
    assert re.search(r"[éèàüöß]", messages)  # accents
    assert any(not e["components"] for e in CORPUS)


@pytest.mark.parametrize("kind", ["webhook", "email", "twitter", "slack", "sms"])
@pytest.mark.parametrize("index", range(len(CORPUS)))
def test_no_rendering_leaks_placeholders(sandbox: Sandbox, kind: str, index: int) -> None:
    message, link = render_for(sandbox, kind, CORPUS[index])
    text = "\n".join(message.parts.values())
    source = CORPUS[index]["message"] + CORPUS[index]["title"]
    assert "None" not in text
    if "{{" not in source and "{%" not in source:
        assert "{{" not in text and "{%" not in text
    assert not EMPTY_LABEL.search(text), text
    assert link in text or link.replace("&", "&amp;") in text


@pytest.mark.parametrize("mode", ["truncate", "thread"])
@pytest.mark.parametrize("index", range(len(CORPUS)))
def test_every_tweet_weighs_at_most_280_and_keeps_the_link(sandbox: Sandbox, mode: str, index: int) -> None:
    message, link = render_for(sandbox, "twitter", CORPUS[index], long_updates=mode)
    tweets = message.data["tweets"]
    assert all(weighted_length(tweet) <= 280 for tweet in tweets), [weighted_length(t) for t in tweets]
    assert any(link in tweet for tweet in tweets)
    if mode == "truncate":
        assert len(tweets) == 1


@pytest.mark.parametrize("index", range(len(CORPUS)))
def test_every_sms_uses_the_fewest_segments(sandbox: Sandbox, index: int) -> None:
    message, link = render_for(sandbox, "sms", CORPUS[index])
    body = message.parts["body"]
    _, forcing = to_gsm(body)
    # GSM-7 whenever every character has a GSM-7 form; then the segment count is GSM-7's
    assert message.size["encoding"] == (GSM7 if not forcing else "UCS-2")
    assert message.size["segments"] == count_segments(body, message.size["encoding"])
    if forcing:
        assert any("UCS-2 forced" in w for w in message.warnings)
    assert link in body
