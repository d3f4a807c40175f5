"""The twitter channel's pure parts, in-process: X's weighted length and fitting a rendering into tweets."""

from __future__ import annotations

import pytest

from channels.twitter.text import LIMIT, URL_LENGTH, fit, weighted_length

LINK = "https://status.example.com/incidents/01J0B6N4E4X6QK5Z7Y8W9V0T1S"
SENTENCE = "Engineers are rolling back the deploy and watching the error rates recover. "


@pytest.mark.parametrize(
    ("text", "weight"),
    [
        ("plain ascii", 11),
        (LINK, 23),
        ("see https://example.com/a/very/long/path/that/goes/on/and/on?with=query", 4 + 23),
        ("status.example.com", 23),
        ("日本語", 6),
        ("서비스 장애", 11),
        ("😷", 2),
        ("👩🏽‍💻", 2),
        ("👨‍👩‍👧‍👦", 2),
        ("🇯🇵", 2),
        ("Ünïcödé café — “quotes”", 23),
        ("…", 2),
        ("e\u0301", 1),
    ],
)
def test_weighted_length_counts_like_x(text: str, weight: int) -> None:
    assert weighted_length(text) == weight


@pytest.mark.parametrize(
    ("text", "weight"),
    [
        ("http://localhost.test/x", len("http://localhost.test/x")),  # a reserved domain X does not link
        ("Node.js", 23),  # counted as a link at worst: X may count it as less, never as more
        # a bare link weighs at least its own length: X links it only for a top-level domain it knows
        ("see status.example.com/incidents/1 now", 4 + len("status.example.com/incidents/1") + 4),
        ("", 0),
    ],
)
def test_links_weigh_23_unless_x_would_not_link_them(text: str, weight: int) -> None:
    assert weighted_length(text) == weight
    assert URL_LENGTH == 23


def test_a_text_that_fits_is_one_tweet_unchanged() -> None:
    text = f"Investigating: API errors\n{LINK}"
    assert fit(text, LINK, "truncate", 10) == ([text], False)
    assert fit(text, LINK, "thread", 10) == ([text], False)


def test_truncate_cuts_on_a_word_before_the_link() -> None:
    text = SENTENCE * 10 + "\n" + LINK
    tweets, truncated = fit(text, LINK, "truncate", 10)

    assert truncated and len(tweets) == 1
    assert weighted_length(tweets[0]) <= LIMIT
    assert tweets[0].endswith("…\n" + LINK)
    head = tweets[0].removesuffix("…\n" + LINK)
    assert text.startswith(head) and text[len(head)] in " ."


def test_a_thread_numbers_its_parts_and_keeps_the_link_in_the_first() -> None:
    """Each part ends a sentence where one ends in its second half; together they hold every word."""
    text = SENTENCE * 10 + "\n" + LINK
    tweets, truncated = fit(text, LINK, "thread", 10)
    count = len(tweets)

    assert not truncated and 2 < count < 10
    assert all(weighted_length(t) <= LIMIT for t in tweets)
    assert tweets[0].endswith(f"(1/{count})\n{LINK}")
    assert [t.rsplit(" ", 1)[-1] for t in tweets[1:]] == [f"({n}/{count})" for n in range(2, count + 1)]
    bodies = [t.removesuffix("\n" + LINK).rsplit(" (", 1)[0] for t in tweets]
    assert all(body.endswith(".") for body in bodies)
    assert " ".join(bodies).split() == (SENTENCE * 10).split()


def test_a_thread_stops_at_its_limit_and_cuts_the_last_part() -> None:
    tweets, truncated = fit(SENTENCE * 100 + LINK, LINK, "thread", 4)

    assert truncated and len(tweets) == 4
    assert tweets[-1].endswith("… (4/4)")
    assert all(weighted_length(t) <= LIMIT for t in tweets)


def test_cjk_weighs_double_when_fitting() -> None:
    text = "障害 " * 200 + LINK
    (tweet,), truncated = fit(text, LINK, "truncate", 10)
    assert truncated and weighted_length(tweet) <= LIMIT < len(tweet) * 2 and tweet.endswith(LINK)
