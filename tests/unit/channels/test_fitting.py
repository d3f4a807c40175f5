"""Fitting a text into a hard limit (``channels.fitting``), shared by sms and twitter: in-process."""

from __future__ import annotations

import pytest

from channels.fitting import ELLIPSIS, keep_link, prefix_end, shorten, split_link, truncate

LINK = "https://status.example.com/incidents/1"


def chars(text: str) -> int:
    return len(text)


def double_cjk(text: str) -> int:
    """A weight that adds up over words, as X's and the GSM-7 septets do: CJK counts two."""
    return sum(2 if "\u4e00" <= c <= "\u9fff" else 1 for c in text)


@pytest.mark.parametrize(("budget", "end"), [(100, 15), (15, 15), (14, 13), (13, 13), (12, 7), (7, 7), (6, 3), (3, 3)])
def test_prefix_end_stops_at_the_last_whole_word(budget: int, end: int) -> None:
    assert prefix_end("one two three x", budget, chars) == end


def test_prefix_end_cuts_inside_a_word_longer_than_the_budget() -> None:
    assert prefix_end("abcdefghij klm", 4, chars) == 4
    assert prefix_end("服务服务服务", 5, double_cjk) == 2


def test_truncate_leaves_a_fitting_text_alone_and_cuts_the_rest_with_an_ellipsis() -> None:
    assert truncate("short enough", 20, chars) == "short enough"
    cut = truncate("one two three, four five", 16, chars)
    assert cut == "one two three" + ELLIPSIS and len(cut) <= 16
    assert truncate("one two three four", 12, chars, ellipsis="...") == "one two..."


def test_split_link_keeps_the_link_and_what_follows() -> None:
    text = f"Errors on the API.\n{LINK}\nReply STOP to unsubscribe"
    assert split_link(text, LINK) == ("Errors on the API.", f"\n{LINK}\nReply STOP to unsubscribe")
    assert split_link("no link here", LINK) == ("no link here", "")
    assert split_link(f"{LINK} first", LINK) == (f"{LINK} first", "")  # nothing before it: all text
    assert split_link("text", None) == ("text", "")


def test_keep_link_gives_it_up_when_it_leaves_too_little_room() -> None:
    text = f"Errors on the API. {LINK}"
    assert keep_link(text, LINK, 100, chars) == ("Errors on the API.", f" {LINK}")
    assert keep_link(text, LINK, 50, chars) == (text, "")  # 50 - 39 < 40


@pytest.mark.parametrize("budget", [60, 80, 120])
def test_shorten_cuts_before_the_link_and_keeps_it(budget: int) -> None:
    text = "word " * 50 + LINK
    cut, dropped = shorten(text, LINK, budget, chars, min_room=10)
    assert dropped and len(cut) <= budget
    assert cut.endswith(ELLIPSIS + " " + LINK)
    assert text.startswith(cut.removesuffix(" " + LINK).removesuffix(ELLIPSIS))


def test_shorten_only_drops_blank_lines_when_that_is_enough() -> None:
    text = "Fixed.\n\n\n\n" + LINK
    assert shorten(text, LINK, len("Fixed.\n" + LINK), chars, min_room=1) == ("Fixed.\n" + LINK, False)
    assert shorten("fits", LINK, 10, chars) == ("fits", False)


def test_shorten_measures_with_the_channel_s_own_weight() -> None:
    text = "服务 " * 40 + LINK
    cut, dropped = shorten(text, LINK, 70, double_cjk, min_room=10)
    assert dropped and double_cjk(cut) <= 70 < len(cut) * 2 and cut.endswith(LINK)
