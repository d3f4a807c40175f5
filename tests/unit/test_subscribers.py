"""Subscriber addresses, component lists and CSV files as people give them (broadcaster.domain.subscribers)."""

from __future__ import annotations

import io
from typing import Any

import pytest

from broadcaster.core.errors import InputError
from broadcaster.domain.subscriber_import import read_csv
from broadcaster.domain.subscribers import clean_components, follows, normalise_email, normalise_phone


def read(text: str) -> tuple[list[tuple[str, str, list[str]]], dict[str, Any]]:
    """``read_csv`` on ``text`` opened as a file with ``newline=""``: (kind, address, components), report."""
    rows, report = read_csv(io.StringIO(text, newline=""))
    return [(kind.value, address, components) for kind, address, components in rows], report.as_json()


# --- addresses -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("Ana@Example.COM", "ana@example.com"),
        (" ana@example.com ", "ana@example.com"),
        ("ana@example.com\n", "ana@example.com"),
        ("ana.b+status@mail.example.co.uk", "ana.b+status@mail.example.co.uk"),
        ("ana@bücher.de", "ana@bücher.de"),
    ],
)
def test_an_email_address_is_kept_bare_and_lower_cased(given: str, kept: str) -> None:
    assert normalise_email(given) == kept


@pytest.mark.parametrize(
    "given",
    [
        "Ana <ana@example.com>",
        "ana@localhost",
        "ana example@example.com",
        "a" * 65 + "@example.com",
        "x" * 250 + "@e.co",
        "ana@exa_mple.com",
        "ana(x)@example.com",
        "ana@@example.com",
        "@example.com",
        "ana@",
        "",
    ],
)
def test_what_is_not_a_bare_email_address_is_refused_as_given(given: str) -> None:
    with pytest.raises(ValueError) as caught:
        normalise_email(given)
    assert str(caught.value) == f"not an email address: {given!r}"


def test_a_control_character_in_an_address_is_named() -> None:
    with pytest.raises(ValueError, match=r"^contains a control character \(U\+001B\) at position 4$"):
        normalise_email("ana\x1b@example.com")


@pytest.mark.parametrize("given", ["+14155550100", " +14155550100 ", "+447911123456", "+33612345678"])
def test_a_phone_number_is_kept_in_e164(given: str) -> None:
    assert normalise_phone(given) == given.strip()


@pytest.mark.parametrize("given", ["4155550100", "+1 415 555 0100", "+1-415-555-0100", "+0123", "00447911123456"])
def test_a_number_not_written_in_e164_says_how_to_write_it(given: str) -> None:
    with pytest.raises(ValueError) as caught:
        normalise_phone(given)
    assert str(caught.value) == (
        f"not an E.164 phone number: {given!r} (write + and the country code and number, digits only, "
        "e.g. +14155550100)"
    )


@pytest.mark.parametrize("given", ["+10000000000", "+1234"])
def test_an_e164_number_that_cannot_exist_is_refused(given: str) -> None:
    with pytest.raises(ValueError) as caught:
        normalise_phone(given)
    assert str(caught.value) == f"not a valid phone number: {given!r}"


# --- components ----------------------------------------------------------------------------------------------


def test_component_names_are_tidied_and_each_kept_once_in_order() -> None:
    given = ["API", " Check   out ", "API", "", "Ca\r\nrt", "a\tb"]
    assert clean_components(given) == ["API", "Check out", "Ca rt", "a b"]


def test_no_component_names_left_means_all_components() -> None:
    assert clean_components(["", "  "]) == []


def test_a_bad_component_name_is_refused_with_its_number() -> None:
    with pytest.raises(ValueError, match=r"^name 2 contains a control character \(U\+0007\) at position 2$"):
        clean_components(["API", "a\x07"])
    with pytest.raises(ValueError, match=f"^not a component name: {'x' * 40!r}$"):
        clean_components(["x" * 201])
    with pytest.raises(ValueError, match="^at most 100 components$"):
        clean_components([f"c{i}" for i in range(101)])


def test_a_subscriber_hears_about_the_components_it_follows() -> None:
    assert follows(["api"], ["API", "Search"])  # names compare without case
    assert not follows(["Checkout"], ["API"])
    assert follows([], ["API"])  # following nothing: everything
    assert follows(["API"], [])  # an incident on no component: everyone


# --- CSV files -----------------------------------------------------------------------------------------------


def test_a_csv_file_gives_one_subscriber_per_address_with_its_components() -> None:
    rows, report = read(
        "email,phone,components\r\nAna@Example.com,+14155550100,API; Search\r\nbob@example.com,,\r\n,,\r\n"
    )
    assert rows == [
        ("email", "ana@example.com", ["API", "Search"]),
        ("phone", "+14155550100", ["API", "Search"]),
        ("email", "bob@example.com", []),
    ]
    assert report == {"created": 0, "updated": 0, "skipped": [], "ignored_columns": []}


def test_bad_rows_are_skipped_and_reported_by_their_line() -> None:
    rows, report = read(
        "email,phone,components\n"
        "ana@example.com,,\n"
        "not-an-email,,\n"
        "=HYPERLINK(1),,\n"
        "ANA@example.com,,\n"
        "carol@example.com,,API;=cmd\n"
        ",+1234,\n"
        "dan@example.com,,,extra\n"
        ",,Checkout\n"
    )
    assert rows == [("email", "ana@example.com", [])]
    assert report["skipped"] == [
        {"line": 3, "error": "email: not an email address: 'not-an-email'"},
        {"line": 4, "error": "email: starts with '=', as a spreadsheet formula does: '=HYPERLINK(1)'"},
        {"line": 5, "error": "email ana@example.com repeats line 2 (line 2 is kept)"},
        {"line": 6, "error": "components: starts with '=', as a spreadsheet formula does: '=cmd'"},
        {"line": 7, "error": "phone: not a valid phone number: '+1234'"},
        {"line": 8, "error": "4 fields, but the header row has 3"},
        {"line": 9, "error": "no email or phone"},
    ]


def test_a_row_is_numbered_by_the_line_it_starts_on() -> None:
    rows, report = read('email,components\ndan@example.com,"Checkout\nAPI"\nnope,\n')
    assert rows == [("email", "dan@example.com", ["Checkout API"])]
    assert report["skipped"] == [{"line": 4, "error": "email: not an email address: 'nope'"}]


def test_the_header_is_read_without_case_spaces_or_byte_order_mark() -> None:
    rows, report = read("\ufeffEmail , Name\nana@example.com,Ana\n")
    assert rows == [("email", "ana@example.com", [])]
    assert report["ignored_columns"] == ["name"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty: it needs a header row with an email or phone column"),
        ("name,city\nAna,Paris\n", "line 1: the header row needs an email or phone column (found 'name', 'city')"),
        ("email,Email\n", "line 1: the header row names the email column twice"),
    ],
)
def test_a_file_without_a_usable_header_is_bad_input(text: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        read(text)
    assert str(caught.value) == message
