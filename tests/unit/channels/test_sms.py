"""The sms channel's pure parts, in-process: GSM-7 and UCS-2 segment counting, the stand-ins for typography,
and the cut to ``max_segments`` that keeps the incident link."""

from __future__ import annotations

from typing import Any

import pytest
from twilio.base.exceptions import TwilioRestException

from broadcaster.core.errors import PermanentError
from channels import Message
from channels.sms import SmsChannel, SmsConfig
from channels.sms.gsm import (
    GSM7,
    UCS2,
    count_segments,
    encoding_of,
    fit_segments,
    gsm_equivalent,
    tidy,
    to_gsm,
    unit_costs,
)

URL = "https://status.example.com/incidents/01J0000000000000000000000"


def channel(**keys: Any) -> SmsChannel:
    """An sms channel that is never asked to send: shaping needs no provider."""
    table = {
        "type": "sms",
        "account_sid": "AC" + "0" * 32,
        "auth_token": "unit-test-token",
        "from_number": "+15005550006",
        "recipients": ["+14155550100"],
        **keys,
    }
    return SmsChannel("sms", SmsConfig.model_validate(table))


def sms(body: str, **keys: Any) -> Message:
    """Shape a body exactly as written (no template), to measure it."""
    return channel(**keys).shape({"body": body}, {"incident": {"url": URL}})


# --- through the channel's shape (moved from tests/test_channel_sms.py) -----------------------------------------


@pytest.mark.parametrize(
    ("body", "segments"),
    [("a" * 160, 1), ("a" * 161, 2), ("a" * 306, 2), ("a" * 307, 3), ("a" * 158 + "€", 1), ("a" * 159 + "€", 2)],
)
def test_gsm_segments_count_septets(body: str, segments: int) -> None:
    """160 GSM-7 characters fit one segment, then 153 per part; '€' and its kin take two septets."""
    message = sms(body)
    assert message.size["encoding"] == "GSM-7"
    assert message.size["segments"] == segments
    assert message.size["characters"] == len(body)
    assert any("segments per recipient" in w for w in message.warnings) == (segments > 1)


def test_an_extension_character_is_not_split_across_parts() -> None:
    """Its escape and code stay together: 152 septets then '€' spill into the next part."""
    assert sms("a" * 152 + "€" + "a" * 152).size["segments"] == 3


def test_typography_becomes_plain_gsm() -> None:
    """Curly quotes, dashes, ellipses, odd spaces and accents GSM-7 lacks are replaced; GSM's own accents stay."""
    message = sms("We\u2019re \u201con it\u201d \u2013 ETA\u2026 soon\u00a0\u2014 Café Zürich, façade São Paulo")

    assert message.parts["body"] == 'We\'re "on it" - ETA... soon - Café Zürich, facade Sao Paulo'
    assert message.size["encoding"] == "GSM-7"
    assert message.warnings == []


def test_an_emoji_forces_ucs2_with_a_warning() -> None:
    """With UCS-2 unavoidable the text is kept as written; emoji count two UTF-16 units."""
    message = sms("Fixed \U0001f389 \u2014 thanks for your patience")

    assert message.parts["body"] == "Fixed \U0001f389 \u2014 thanks for your patience"
    assert message.size["encoding"] == "UCS-2"
    assert any(w.startswith("UCS-2 forced by '\U0001f389'") for w in message.warnings)
    assert sms("a" * 68 + "\U0001f389").size["segments"] == 1
    assert sms("a" * 69 + "\U0001f389").size["segments"] == 2
    assert sms("\u670d" * 71).size == {"segments": 2, "encoding": "UCS-2", "characters": 71}


def test_a_long_text_is_cut_to_max_segments_with_a_warning_and_its_full_count() -> None:
    """The cut keeps the link; the size says what it was cut from."""
    message = sms("word " * 200 + URL, max_segments=2)

    assert message.size["segments"] == 2 and message.size["full_segments"] == 7
    assert message.parts["body"].endswith("word...\n" + URL) or message.parts["body"].endswith("word... " + URL)
    assert message.warnings[0] == "cut to 2 segments (max_segments; the full text takes 7)"


# --- the helpers --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("", 1),
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 153 * 3, 3),
        ("a" * (153 * 3 + 1), 4),
        ("€" * 80, 1),  # 160 septets
        ("€" * 81, 2),
    ],
)
def test_gsm7_segments(text: str, segments: int) -> None:
    assert encoding_of(text) == GSM7
    assert count_segments(text) == segments


@pytest.mark.parametrize(
    ("text", "segments"),
    [("\u670d" * 70, 1), ("\u670d" * 71, 2), ("\u670d" * 134, 2), ("\u670d" * 135, 3), ("\U0001f389" * 35, 1)],
)
def test_ucs2_segments_count_utf16_units(text: str, segments: int) -> None:
    """70 units alone, then 67 per part; an emoji beyond the BMP is two units."""
    assert encoding_of(text) == UCS2
    assert count_segments(text) == segments


def test_a_two_unit_character_is_never_split_across_parts() -> None:
    """134 units are two parts of 67, unless an emoji would straddle them: then it starts the second part."""
    assert count_segments("\u670d" * 134, UCS2) == 2
    assert count_segments("\u670d" * 66 + "\U0001f389" + "\u670d" * 66, UCS2) == 3
    assert unit_costs("a€", GSM7) == [1, 2]
    assert unit_costs("a\U0001f389", UCS2) == [1, 2]


def test_to_gsm_replaces_what_has_a_stand_in_and_names_what_forces_ucs2() -> None:
    assert to_gsm("\u201cquoted\u201d \u2014 done\u2026") == ('"quoted" - done...', [])
    assert to_gsm("Łódź") == ("Lodz", [])
    text, forcing = to_gsm("ok \U0001f389 \u670d \U0001f389")
    assert text == "ok \U0001f389 \u670d \U0001f389" and forcing == ["\U0001f389", "\u670d"]


@pytest.mark.parametrize(("char", "plain"), [("é", "é"), ("ç", "c"), ("\u00a0", " "), ("\u200b", ""), ("服", None)])
def test_gsm_equivalent(char: str, plain: str | None) -> None:
    assert gsm_equivalent(char) == plain


def test_tidy_keeps_one_space_and_no_blank_lines() -> None:
    assert tidy("  Investigating:   API \n\n\n errors  \n") == "Investigating: API\nerrors"


@pytest.mark.parametrize("max_segments", [1, 2, 3, 10])
@pytest.mark.parametrize("encoding", [GSM7, UCS2])
def test_fit_segments_cuts_on_a_word_and_keeps_the_link(encoding: str, max_segments: int) -> None:
    """The cut fits ``max_segments`` of its encoding, ends with its ellipsis and keeps the link whole."""
    word = "word " if encoding == GSM7 else "\u670d\u52a1 "
    text = word * 1000 + "\n" + URL
    cut = fit_segments(text, URL, encoding, max_segments)

    assert count_segments(cut, encoding) <= max_segments
    assert cut.endswith(URL)
    head = cut.removesuffix(URL).rstrip()
    assert head.endswith("..." if encoding == GSM7 else "\u2026")
    assert text.startswith(head.removesuffix("...").removesuffix("\u2026"))


def test_fit_segments_in_gsm7_never_adds_a_ucs2_ellipsis() -> None:
    cut = fit_segments("word " * 100, None, GSM7, 1)
    assert encoding_of(cut) == GSM7 and cut.endswith("...") and count_segments(cut) == 1


# --- what a Twilio error says about the recipient ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "recipient"),
    [(400, 21610, "unsubscribed"), (400, 21211, "invalid"), (400, 21614, "invalid"), (400, 21217, "invalid"),
     (401, 20003, None), (400, 21602, None)],
)  # fmt: skip
def test_a_permanent_twilio_error_says_whether_the_recipient_is_gone(
    status: int, code: int, recipient: str | None
) -> None:
    """STOP (21610) unsubscribes a subscriber; a number Twilio calls invalid counts towards its quarantine."""
    error = channel()._translate(TwilioRestException(status, "/Messages.json", msg="refused", code=code), "to +1")

    assert isinstance(error, PermanentError)
    assert error.recipient == recipient
