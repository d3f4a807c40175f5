"""What may enter the broadcaster: one set of limits and text checks for every entry point.

The command line, the HTTP API, the Python API and the ``broadcaster.post_update`` task all build an
``UpdateRequest`` (broadcaster.domain.broadcasts), whose fields use the types below; the API's request bodies take
their lengths from the same constants, and subscribers, maintenance and post-mortems check their text here.

Text is refused when it holds a character that would reach a terminal, an SMS or a page as something other
than text: C0 controls (U+0000-U+001F), DEL and C1 controls (U+007F-U+009F), the bidirectional overrides and
isolates (U+202A-U+202E, U+2066-U+2069) and unpaired surrogates (invalid UTF-8). Two kinds of text:

    one line   titles, component and channel names, addresses, ids: no control character at all (tab and
               line breaks included: these are shown in one-line, tab-separated listings); surrounding
               white space is stripped first
    multi-line messages, maintenance messages, post-mortem reports: newline and tab are allowed, and CR only
               just before a newline (Windows line ends), stored as a newline
"""

from __future__ import annotations

import os
import re
import stat as stat_
from collections.abc import Iterator
from typing import Annotated, TextIO

from pydantic import AfterValidator, Field

from broadcaster.core.errors import InputError

#: an incident's (or a maintenance window's) title, characters
MAX_TITLE = 500
#: an update's message (and a maintenance window's), characters
MAX_MESSAGE = 20_000
#: one component name, characters
MAX_COMPONENT = 200
#: components named by one update, followed by one subscriber, or held by one incident across its updates
MAX_COMPONENTS = 100
#: channels named by one update
MAX_CHANNELS = 100
#: one channel name (``[channels.NAME]``), characters
MAX_CHANNEL_NAME = 64
#: an incident id as given, characters
MAX_ID = 64
#: an email address (RFC 5321's path limit), characters
MAX_EMAIL = 254
#: a post-mortem report, characters
MAX_REPORT = 200_000
#: a link given with one (a post-mortem's ``--url``), characters
MAX_URL = 2_000
#: a ``subscribers import`` file, bytes (about 1.5 million rows of a typical export)
MAX_IMPORT_BYTES = 50 * 1024 * 1024
#: one line of a ``subscribers import`` file, characters
MAX_IMPORT_LINE = 64 * 1024
#: what a spreadsheet reads as a formula at the start of a cell (CSV injection)
FORMULA_PREFIXES = ("=", "+", "-", "@")

_BIDI = "\u202a-\u202e\u2066-\u2069"
_SURROGATES = "\ud800-\udfff"
# One line: every control character. Multi-line: all but tab and LF, and CR unless a LF follows.
_ONE_LINE = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI}{_SURROGATES}]")
_MULTI_LINE = re.compile(f"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f{_BIDI}{_SURROGATES}]|\r(?!\n)")


def _describe(char: str, one_line: bool) -> str:
    code = ord(char)
    name = f"U+{code:04X}"
    if 0x202A <= code <= 0x202E or 0x2066 <= code <= 0x2069:
        return f"a bidirectional formatting character ({name})"
    if 0xD800 <= code <= 0xDFFF:
        return f"an unpaired surrogate ({name}, not valid UTF-8)"
    if char == "\r" and not one_line:
        return f"a carriage return ({name}) without a newline after it"
    if char in "\n\r" and one_line:
        return f"a line break ({name})"
    if char == "\t" and one_line:
        return f"a tab ({name})"
    return f"a control character ({name})"


def _refuse(value: str, index: int, one_line: bool, offset: int = 0) -> ValueError:
    where = f"position {offset + index + 1}"
    if not one_line and "\n" in value[:index]:
        line = value.count("\n", 0, index) + 1
        where += f" (line {line}, column {index - value.rfind(chr(10), 0, index)})"
    hint = ": it must be one line" if one_line and value[index] in "\t\n\r" else ""
    return ValueError(f"contains {_describe(value[index], one_line)} at {where}{hint}")


def one_line(value: str) -> str:
    """A one-line text without surrounding white space; ValueError names the first bad character.

    Positions count from 1 in the text as given.
    """
    text = value.strip()
    found = _ONE_LINE.search(text)
    if found is not None:
        raise _refuse(text, found.start(), True, len(value) - len(value.lstrip()))
    return text


def multi_line(value: str) -> str:
    """A text of lines (newlines and tabs allowed; CRLF becomes LF); ValueError names the first bad character."""
    found = _MULTI_LINE.search(value)
    if found is not None:
        raise _refuse(value, found.start(), False)
    return value.replace("\r\n", "\n")


def not_formula(value: str) -> str:
    """Refuse a spreadsheet cell that a spreadsheet would run (``=HYPERLINK(...)``, ``@SUM(...)``)."""
    if value.startswith(FORMULA_PREFIXES):
        raise ValueError(f"starts with {value[0]!r}, as a spreadsheet formula does: {value[:40]!r}")
    return value


def checked(field: str, value: str, *, multiline: bool = False, max_length: int | None = None) -> str:
    """``value`` checked as one line (or ``multiline``) and against ``max_length``; InputError names ``field``
    (in its message and as its ``field``)."""
    try:
        text = multi_line(value) if multiline else one_line(value)
    except ValueError as exc:
        raise InputError(f"{field}: {exc}", field=field) from None
    if max_length is not None and len(text) > max_length:
        raise InputError(f"{field}: {len(text):,} characters, more than the {max_length:,} allowed", field=field)
    return text


# Field types for pydantic models: the length first (a 100 KB name is refused by its length), then the text.
# The lengths alone are what a schema declares (the HTTP API's request bodies).
TitleLength = Annotated[str, Field(max_length=MAX_TITLE)]
TextLength = Annotated[str, Field(max_length=MAX_MESSAGE)]
ComponentLength = Annotated[str, Field(max_length=MAX_COMPONENT)]
ChannelNameLength = Annotated[str, Field(max_length=MAX_CHANNEL_NAME)]
IdentifierLength = Annotated[str, Field(max_length=MAX_ID)]
Title = Annotated[TitleLength, AfterValidator(one_line)]
Text = Annotated[TextLength, AfterValidator(multi_line)]
Component = Annotated[ComponentLength, AfterValidator(one_line)]
ChannelName = Annotated[ChannelNameLength, AfterValidator(one_line)]
Identifier = Annotated[IdentifierLength, AfterValidator(one_line)]
Components = Annotated[list[Component], Field(max_length=MAX_COMPONENTS)]
Channels = Annotated[list[ChannelName], Field(max_length=MAX_CHANNELS)]


def bounded_lines(
    handle: TextIO, name: str, max_bytes: int = MAX_IMPORT_BYTES, max_line: int = MAX_IMPORT_LINE
) -> Iterator[str]:
    """The lines of a file opened with ``newline=""``, read one at a time within the import limits.

    Memory stays bounded by ``max_line`` whatever the file is (``/dev/zero`` has no line end): a longer line,
    or more than ``max_bytes`` in all, is an InputError naming ``name`` and the limit. A regular file that is
    too large is refused before anything is read.
    """
    too_large = f"{name}: larger than {max_bytes:,} bytes ({max_bytes / 2**20:g} MiB), the limit for one import"
    try:
        status = os.fstat(handle.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (a StringIO)
        status = None
    if status is not None and stat_.S_ISREG(status.st_mode) and status.st_size > max_bytes:
        raise InputError(too_large)
    total = 0
    number = 0
    while True:
        # Two characters more than a line may hold: its CR LF end is read with it.
        line = handle.readline(max_line + 2)
        if not line:
            return
        number += 1
        if len(line.rstrip("\r\n")) > max_line:
            raise InputError(f"{name}: line {number} is longer than {max_line:,} characters, the limit for one line")
        total += len(line.encode("utf-8", "surrogatepass"))
        if total > max_bytes:
            raise InputError(too_large)
        yield line
