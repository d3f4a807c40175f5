"""Fitting a rendered text into a channel's hard limit: cut on a word boundary, keeping the incident link.

Shared by the channels that have one (X's weighted 280 characters, an SMS's segments). ``weigh`` measures a
piece of text in the channel's own unit; it must add up over words (a text weighs what its words weigh), which
holds for X's weighted length and for GSM-7 septets or UTF-16 units.
"""

from __future__ import annotations

import re
from collections.abc import Callable

Weigh = Callable[[str], int]
ELLIPSIS = "…"
#: what a cut text may not end with before its ellipsis
_TRAILING = " \t\n,;:.-–—"


def prefix_end(text: str, budget: int, weigh: Weigh) -> int:
    """Where to cut ``text`` so the part before weighs at most ``budget``: at a word's end when one fits."""
    total, end = 0, 0
    # links and emoji never hold a space, so words weigh the same alone as in the whole text
    for word in re.finditer(r"\s*\S+", text):
        total += weigh(word.group())
        if total > budget:
            break
        end = word.end()
    else:
        return len(text)
    if end:
        return end
    # the first word alone is too long: cut inside it (within a link's greatest length of the budget)
    low, high = 0, min(word.end(), budget + 4096)
    while low < high:
        middle = (low + high + 1) // 2
        if weigh(text[:middle]) <= budget:
            low = middle
        else:
            high = middle - 1
    return low


def truncate(text: str, budget: int, weigh: Weigh, ellipsis: str = ELLIPSIS) -> str:
    """``text`` if it fits ``budget``, else its longest word-boundary prefix that fits with ``ellipsis``."""
    if prefix_end(text, budget, weigh) == len(text):
        return text
    head = text[: prefix_end(text, budget - weigh(ellipsis), weigh)].rstrip(_TRAILING)
    return head + ellipsis


def split_link(text: str, link: str | None) -> tuple[str, str]:
    """The text before the incident link, and the link with whatever follows it (kept whole)."""
    at = text.rfind(link) if link else -1
    if at <= 0:
        return text, ""
    head = text[:at].rstrip()
    return head, ("\n" if "\n" in text[len(head) : at] else " ") + text[at:]


def keep_link(text: str, link: str | None, budget: int, weigh: Weigh, min_room: int = 40) -> tuple[str, str]:
    """``split_link``, unless what follows the link leaves less than ``min_room`` of ``budget``: then all is text."""
    head, kept = split_link(text, link)
    if budget - weigh(kept) < min_room:
        return text, ""
    return head, kept


def shorten(
    text: str, link: str | None, budget: int, weigh: Weigh, ellipsis: str = ELLIPSIS, min_room: int = 40
) -> tuple[str, bool]:
    """``text`` within ``budget``, and whether words were dropped.

    A longer text is cut on a word boundary with ``ellipsis`` before the link, which is kept with what follows
    it (e.g. "Reply STOP to unsubscribe"); when that would leave less than ``min_room`` for the text, it is all
    treated as text.
    """
    if weigh(text) <= budget:
        return text, False
    head, kept = keep_link(text, link, budget, weigh, min_room)
    if weigh(head + kept) <= budget:  # only the blank lines before the link were too many
        return head + kept, False
    return truncate(head, budget - weigh(kept), weigh, ellipsis) + kept, True
