"""X's weighted length (twitter-text v3) and fitting a rendering into tweets: pure, unit-tested in-process.

A rendering longer than 280 weighted characters becomes one tweet cut on a word boundary with "…", keeping the
incident link (``truncate``), or a numbered thread whose first part ends with the link (``thread``).
"""

from __future__ import annotations

import re
import unicodedata

from channels.fitting import keep_link, prefix_end, shorten, truncate

LIMIT = 280
URL_LENGTH = 23

# --- X's weighted length (twitter-text v3 configuration) ----------------------------------------------------

#: code points that weigh 2: all but U+0000-U+10FF, U+2000-U+200D, U+2010-U+201F and U+2032-U+2037
_HEAVY = re.compile("[^\u0000-\u10ff\u2000-\u200d\u2010-\u201f\u2032-\u2037]")
#: emoji bases (close to Unicode's Extended_Pictographic); a whole emoji sequence weighs 2
_PICT = (
    "\u00a9\u00ae\u203c\u2049\u2122\u2139\u2194-\u2199\u21a9\u21aa\u231a\u231b\u2328\u23cf\u23e9-\u23f3"
    "\u23f8-\u23fa\u24c2\u25aa\u25ab\u25b6\u25c0\u25fb-\u25fe\u2600-\u27bf\u2934\u2935\u2b05-\u2b07"
    "\u2b1b\u2b1c\u2b50\u2b55\u3030\u303d\u3297\u3299\U0001f000-\U0001faff"
)
_MODIFIER = "(?:\ufe0f|[\U0001f3fb-\U0001f3ff])"
_EMOJI = (
    r"[\U0001f1e6-\U0001f1ff]{2}"  # a flag: two regional indicators
    r"|[0-9#*]\ufe0f?\u20e3"  # a keycap
    rf"|[{_PICT}]{_MODIFIER}*[\U000e0020-\U000e007f]*(?:\u200d[{_PICT}]{_MODIFIER}*)*"
)
#: letters that may stand in a link's path besides ASCII (twitter-text: Latin accents, Cyrillic)
_ACCENTS = (
    "\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u0253\u0254\u0256\u0257\u0259\u025b\u0263\u0268\u026f"
    "\u0272\u0289\u028b\u02bb\u0300-\u036f\u0400-\u04ff\u1e00-\u1eff"
)
_PATH_CHAR = rf"[a-z0-9!*';:=+,.$/%#\[\]\-\u2013_~@|&{_ACCENTS}]"
_PATH_END = rf"[a-z0-9+\-=_#/{_ACCENTS}]"
_TAIL = (
    r"(?::\d+)?"
    rf"(?:/(?:(?:{_PATH_CHAR}|\({_PATH_CHAR}+\))*(?:{_PATH_END}|\({_PATH_CHAR}+\)))?)?"
    r"(?:\?[a-z0-9!?*'@();:&=+$/%#\[\]\-_.,~|]*[a-z0-9\-_&=#/])?"
)
_TLD = r"(?P<tld>[a-z]{2,}|xn--[a-z0-9-]+)(?![a-z0-9@+-])"
_TOKENS = re.compile(
    rf"(?P<url>(?<![a-z0-9@$#＠＃])https?://(?:[^\W_](?:[\w-]*[^\W_])?\.)+{_TLD}{_TAIL})"
    rf"|(?P<bare>(?<![a-z0-9@$#_./-])(?:[a-z0-9](?:[a-z0-9_-]*[a-z0-9])?\.)+"
    rf"(?P<btld>[a-z]{{2,}})(?![a-z0-9@+-]){_TAIL})"
    rf"|(?P<emoji>{_EMOJI})",
    re.IGNORECASE,
)
#: reserved and private top-level domains that X does not link, so it counts them character by character
_UNLINKED = {"test", "local", "localhost", "internal", "invalid", "example", "lan", "home", "corp", "intranet"}


def _plain(text: str) -> int:
    return len(text) + len(_HEAVY.findall(text))


def weighted_length(text: str) -> int:
    """X's count of ``text``: a link weighs 23, an emoji sequence 2, CJK and most symbols 2, Latin 1.

    A link without ``http(s)://`` (``status.example.com``) weighs 23 to X only when its top-level domain is one
    X knows (``Node.js`` is no link); it is counted here as the larger of 23 and its own length: X may count
    such a word as less, never as more.
    """
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n")
    total, position = 0, 0
    for match in _TOKENS.finditer(text):
        total += _plain(text[position : match.start()])
        token = match.group()
        if match.group("url"):
            total += _plain(token) if match.group("tld").lower() in _UNLINKED else URL_LENGTH
        elif match.group("bare"):
            total += _plain(token) if match.group("btld").lower() in _UNLINKED else max(URL_LENGTH, _plain(token))
        else:
            total += 2
        position = match.end()
    return total + _plain(text[position:])


# --- fitting a rendering into tweets --------------------------------------------------------------------


def _sentence_end(text: str, end: int) -> int:
    """A thread part reads better ending with a sentence or a line, when one ends in its second half."""
    ends = [m.end() for m in re.finditer(r"[.!?…](?=\s)|(?=\n)", text[: end + 1]) if end // 2 <= m.end() <= end]
    return max(ends, default=end)


def fit(text: str, link: str | None, mode: str, max_tweets: int) -> tuple[list[str], bool]:
    """Tweets that each weigh at most 280 and keep ``link``; and whether text had to be dropped."""
    if weighted_length(text) <= LIMIT:
        return [text], False
    if mode == "truncate":
        tweet, truncated = shorten(text, link, LIMIT, weighted_length)
        tweets = [tweet]
    else:
        head, kept = keep_link(text, link, LIMIT, weighted_length)
        if weighted_length(head + kept) <= LIMIT:  # only blank lines before the link were too many
            return [head + kept], False
        tweets, truncated = _thread(head, kept, max_tweets)
    if any(weighted_length(tweet) > LIMIT for tweet in tweets):  # a safety net; the tests show it never fires
        return [truncate(text, LIMIT, weighted_length)], True
    return tweets, truncated


def _thread(head: str, kept: str, max_tweets: int) -> tuple[list[str], bool]:
    """``head`` in numbered parts on word boundaries, ``kept`` (the link) closing the first one."""
    for digits in range(1, 4):
        numbering = len(f" ({'9' * digits}/{'9' * digits})")
        chunks: list[str] = []
        rest, truncated = head, False
        while rest:
            budget = LIMIT - numbering - (weighted_length(kept) if not chunks else 0)
            end = prefix_end(rest, budget, weighted_length)
            if end == len(rest):
                chunks.append(rest)
                break
            if len(chunks) + 1 == max_tweets:
                chunks.append(truncate(rest, budget, weighted_length))
                truncated = True
                break
            end = _sentence_end(rest, max(1, end))
            chunks.append(rest[:end].rstrip())
            rest = rest[end:].strip()
        if len(str(len(chunks))) <= digits:
            break
    tweets = [f"{chunk} ({n}/{len(chunks)})" for n, chunk in enumerate(chunks, 1)]
    tweets[0] += kept
    return tweets, truncated
