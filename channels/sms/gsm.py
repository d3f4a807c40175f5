"""SMS text: the GSM-7 alphabet, its plain stand-ins for typography, and how carriers count segments.

Carriers bill per segment, and one character outside the GSM-7 alphabet switches the whole message to UCS-2,
which holds 70 characters per segment instead of 160. The alphabet is a small table of our own (3GPP TS 23.038,
basic set and extension table) rather than a dependency. Pure functions: ``tests/unit/channels/test_sms.py``.
"""

from __future__ import annotations

import unicodedata

from channels.fitting import ELLIPSIS, shorten

GSM7 = "GSM-7"
UCS2 = "UCS-2"

#: the GSM 03.38 basic character set, without the escape code itself
GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
#: the extension table: each costs two septets (escape + code)
GSM_EXTENDED = frozenset("\f^{}\\[~]|€")
GSM = GSM_BASIC | GSM_EXTENDED

#: characters with a plain GSM-7 stand-in that Unicode decomposition (NFKD) does not give
REPLACEMENTS: dict[str, str] = {
    **dict.fromkeys("‘’‚‛′‵＇`´", "'"),
    **dict.fromkeys("“”„‟″‶«»〝〞＂", '"'),
    **dict.fromkeys("‐‑‒–—―−﹘﹣－•‣⁃·", "-"),
    **dict.fromkeys("\u00a0\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000\t", " "),
    **dict.fromkeys("\u200b\u200c\u200d\u2060\ufeff\u00ad", ""),
    "…": "...", "‹": "<", "›": ">", "×": "x", "⁄": "/", "©": "(c)", "®": "(R)",
    "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ı": "i", "œ": "oe", "Œ": "OE", "ð": "d", "þ": "th",
}  # fmt: skip

#: (characters in a single-segment message, characters per part of a longer one), per encoding
SEGMENT_SIZES: dict[str, tuple[int, int]] = {GSM7: (160, 153), UCS2: (70, 67)}


def gsm_equivalent(char: str) -> str | None:
    """``char`` as GSM-7 text: itself, a plain stand-in, or its base letters; None when it has none."""
    if char in GSM:
        return char
    if char in REPLACEMENTS:
        return REPLACEMENTS[char]
    decomposed = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
    plain = "".join(REPLACEMENTS.get(c, c) for c in decomposed)
    return plain if plain and all(c in GSM for c in plain) else None


def to_gsm(text: str) -> tuple[str, list[str]]:
    """``text`` in GSM-7 where possible; else the text unchanged and the characters that force UCS-2."""
    text = unicodedata.normalize("NFC", text)
    converted: list[str] = []
    forcing: list[str] = []
    for char in text:
        plain = gsm_equivalent(char)
        if plain is None:
            forcing.append(char)
        else:
            converted.append(plain)
    if forcing:
        return text, list(dict.fromkeys(forcing))
    return "".join(converted), []


def encoding_of(text: str) -> str:
    return GSM7 if all(c in GSM for c in text) else UCS2


def count_segments(text: str, encoding: str | None = None) -> int:
    """How many segments carriers split ``text`` into.

    GSM-7 counts septets (extension characters take two); UCS-2 counts UTF-16 code units (emoji beyond the
    BMP take two). Neither pair is ever split across two parts, so a part may hold one unit less.
    """
    encoding = encoding or encoding_of(text)
    costs = unit_costs(text, encoding)
    single, part = SEGMENT_SIZES[encoding]
    if sum(costs) <= single:
        return 1
    count, used = 1, 0
    for unit in costs:
        if used + unit > part:
            count, used = count + 1, 0
        used += unit
    return count


def unit_costs(text: str, encoding: str) -> list[int]:
    """What each character costs: GSM-7 septets (the extension table takes two), or UTF-16 code units."""
    if encoding == GSM7:
        return [2 if c in GSM_EXTENDED else 1 for c in text]
    return [2 if ord(c) > 0xFFFF else 1 for c in text]


def fit_segments(text: str, link: str | None, encoding: str, max_segments: int) -> str:
    """``text`` cut on a word boundary to at most ``max_segments`` segments, keeping ``link`` and what follows it.

    The cut ends with "…" in UCS-2 and with its GSM-7 stand-in "..." in GSM-7 (a "…" would force the whole
    message into UCS-2).
    """
    single, part = SEGMENT_SIZES[encoding]
    ellipsis = ELLIPSIS if encoding == UCS2 else REPLACEMENTS[ELLIPSIS]

    def weigh(piece: str) -> int:
        return sum(unit_costs(piece, encoding))

    budget = single if max_segments == 1 else part * max_segments
    # A part never splits a two-unit character, so it may hold one unit less: give one back until it fits.
    for room in range(budget, max(0, budget - max_segments - 2), -1):
        # the link tells the rest of the story: keep it while any text fits beside it
        cut, _ = shorten(text, link, room, weigh, ellipsis, min_room=1)
        if count_segments(cut, encoding) <= max_segments:
            return cut
    return cut


def tidy(text: str) -> str:
    """One space between words, no blank lines: every character is paid for."""
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line)
