"""Text limits and control characters: what may enter the broadcaster (broadcaster.core.limits)."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from broadcaster.core.errors import InputError
from broadcaster.core.limits import (
    MAX_TITLE,
    Components,
    Text,
    Title,
    bounded_lines,
    checked,
    multi_line,
    not_formula,
    one_line,
)


class Update(BaseModel):
    """A request body with the field types every entry point uses."""

    title: Title
    message: Text
    components: Components = []


def refusal(check: Callable[[str], str], value: str) -> str:
    with pytest.raises(ValueError) as caught:
        check(value)
    return str(caught.value)


def test_one_line_text_loses_its_surrounding_white_space() -> None:
    assert one_line("  API down \u00a0") == "API down"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("API\tdown", "contains a tab (U+0009) at position 4: it must be one line"),
        ("  API\ndown", "contains a line break (U+000A) at position 6: it must be one line"),
        ("API\rdown", "contains a line break (U+000D) at position 4: it must be one line"),
        ("API\x1b[31m", "contains a control character (U+001B) at position 4"),
        ("a\x7fb", "contains a control character (U+007F) at position 2"),
        ("a\x85b", "contains a control character (U+0085) at position 2"),
        ("a\u202eb", "contains a bidirectional formatting character (U+202E) at position 2"),
        ("a\u2066b", "contains a bidirectional formatting character (U+2066) at position 2"),
        ("a\ud800b", "contains an unpaired surrogate (U+D800, not valid UTF-8) at position 2"),
    ],
)
def test_one_line_text_names_the_first_bad_character_and_where_it_is(value: str, message: str) -> None:
    """Positions count from 1 in the text as given, leading spaces included."""
    assert refusal(one_line, value) == message


def test_multi_line_text_keeps_tabs_and_newlines_and_turns_crlf_into_lf() -> None:
    assert multi_line("Line one\r\nline two\twith a tab\n") == "Line one\nline two\twith a tab\n"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("line one\nline\rtwo", "contains a carriage return (U+000D) without a newline after it at position 14 "
         "(line 2, column 5)"),
        ("first\nsecond \x07bell", "contains a control character (U+0007) at position 14 (line 2, column 8)"),
        ("\x00", "contains a control character (U+0000) at position 1"),
        ("a\x0bb", "contains a control character (U+000B) at position 2"),
        ("a\u202ab", "contains a bidirectional formatting character (U+202A) at position 2"),
    ],
)  # fmt: skip
def test_multi_line_text_names_the_line_and_column_of_a_bad_character(value: str, message: str) -> None:
    assert refusal(multi_line, value) == message


@pytest.mark.parametrize("cell", ['=HYPERLINK("http://evil.example")', "+1+1", "-2", "@SUM(A1)"])
def test_what_a_spreadsheet_would_run_is_refused(cell: str) -> None:
    assert refusal(not_formula, cell) == f"starts with {cell[0]!r}, as a spreadsheet formula does: {cell[:40]!r}"


def test_text_that_only_contains_a_formula_sign_is_kept() -> None:
    assert not_formula("Checkout (EU = west)") == "Checkout (EU = west)"


def test_checked_text_names_the_field_in_its_input_error() -> None:
    assert checked("--title", "  Checkout down ") == "Checkout down"
    assert checked("--message", "a\r\nb", multiline=True) == "a\nb"
    with pytest.raises(InputError, match=r"^--title: contains a line break \(U\+000A\) at position 2: it must be one"):
        checked("--title", "x\ny")
    with pytest.raises(InputError, match="^--title: 501 characters, more than the 500 allowed$"):
        checked("--title", "x" * (MAX_TITLE + 1), max_length=MAX_TITLE)
    with pytest.raises(InputError, match="^--message: 20,001 characters, more than the 20,000 allowed$"):
        checked("--message", "x" * 20_001, multiline=True, max_length=20_000)


def test_the_length_is_counted_after_the_white_space_is_stripped() -> None:
    assert checked("--title", "  " + "x" * MAX_TITLE + "  ", max_length=MAX_TITLE) == "x" * MAX_TITLE


def test_request_fields_check_their_text_and_length() -> None:
    update = Update.model_validate({"title": " API down ", "message": "We are on it.\r\n", "components": [" API "]})
    assert (update.title, update.message, update.components) == ("API down", "We are on it.\n", ["API"])
    with pytest.raises(ValidationError, match=r"title\n  Value error, contains a tab \(U\+0009\) at position 2"):
        Update.model_validate({"title": "a\tb", "message": "x"})
    with pytest.raises(ValidationError, match="String should have at most 500 characters"):
        Update.model_validate({"title": "a" * 501, "message": "x"})
    with pytest.raises(ValidationError, match="List should have at most 100 items"):
        Update.model_validate({"title": "a", "message": "x", "components": [f"c{i}" for i in range(101)]})


def test_an_import_file_is_read_line_by_line_with_its_line_ends() -> None:
    assert list(bounded_lines(io.StringIO("email\r\nana@example.com\nlast"), "subs.csv")) == [
        "email\r\n",
        "ana@example.com\n",
        "last",
    ]


def test_a_line_may_be_as_long_as_the_limit_without_its_line_end() -> None:
    assert list(bounded_lines(io.StringIO("b" * 10 + "\r\n"), "subs.csv", max_line=10)) == ["b" * 10 + "\r\n"]


def test_a_too_long_line_is_refused_with_its_number() -> None:
    lines = bounded_lines(io.StringIO("email\n" + "b" * 11 + "\n"), "subs.csv", max_line=10)
    assert next(lines) == "email\n"
    with pytest.raises(InputError, match="^subs.csv: line 2 is longer than 10 characters, the limit for one line$"):
        next(lines)


def test_a_stream_larger_than_the_limit_is_refused_when_it_gets_there() -> None:
    lines = bounded_lines(io.StringIO("aaaa\nbbbb\ncccc\n"), "-", max_bytes=12)
    assert [next(lines), next(lines)] == ["aaaa\n", "bbbb\n"]
    with pytest.raises(InputError, match=r"^-: larger than 12 bytes \(.* MiB\), the limit for one import$"):
        next(lines)


def test_a_file_larger_than_the_limit_is_refused_before_anything_is_read(tmp_path: Path) -> None:
    path = tmp_path / "subscribers.csv"
    path.write_text("email\n" + "ana@example.com\n" * 100)
    with path.open(newline="") as handle:
        lines = bounded_lines(handle, "subscribers.csv", max_bytes=1024)
        with pytest.raises(InputError, match=r"^subscribers.csv: larger than 1,024 bytes \(0.000976562 MiB\)"):
            next(lines)
        assert handle.tell() == 0
