"""The email channel's message as a mail server receives it: headers encoded and written as compat32 would."""

from __future__ import annotations

from email.policy import compat32

import pytest

from broadcaster.sandbox import Sandbox
from channels import Message, SendContext
from channels.email import UNFOLDED, EmailChannel, EmailConfig

HEADERS = [
    ("Subject", "[Major] Checkout errors: investigating"),
    ("Subject", "Störung: Zahlungen ✓ — behoben"),
    ("Subject", "日本語の件名"),
    ("Subject", "two  spaces and a\ttab"),
    ("Subject", " a leading space"),
    ("Subject", "word " * 250),  # longer than one line may be
    ("List-Unsubscribe", "<https://status.example.com/v1/unsubscribe/" + "x" * 900 + ">"),
    ("To", "=?utf-8?q?Zo=C3=AB?= <zoe@example.com>"),
    ("Content-Type", 'text/plain; charset="utf-8"'),
]


@pytest.mark.parametrize(("name", "value"), HEADERS)
def test_headers_are_written_as_compat32_writes_them(name: str, value: str) -> None:
    """Plain lines skip compat32's Header object; what is written must not change."""
    assert UNFOLDED.fold(name, value) == compat32.clone(max_line_length=998).fold(name, value)


def test_names_and_subject_outside_ascii_reach_the_server_readable(sandbox: Sandbox) -> None:
    config = {**sandbox.channel_config("email"), "sender": "Équipe État <etat@example.com>"}
    channel = EmailChannel("email", EmailConfig.model_validate(config))
    message = Message(
        parts={"subject": "Störung: Zahlungen — behoben", "text": "Alles gut.", "html": "<p>Alles gut.</p>"}, size={}
    )
    try:
        for target in ("Zoë <zoe@example.com>", "plain@example.com"):
            channel.send(message, target, SendContext(delivery_id="01J00000000000000000000DLV", attempt=1))
    finally:
        channel.close()

    mails = sandbox.smtp.received()
    assert [mail.recipients for mail in mails] == [["zoe@example.com"], ["plain@example.com"]]  # the envelope
    assert all(mail.sender == "etat@example.com" for mail in mails)
    first, second = (mail.message for mail in mails)
    assert first["Subject"] == second["Subject"] == "Störung: Zahlungen — behoben"
    assert first["From"] == "Équipe État <etat@example.com>"
    assert (first["To"], second["To"]) == ("Zoë <zoe@example.com>", "plain@example.com")
    assert first["Message-ID"] == "<01J00000000000000000000DLV@example.com>"
    assert [part.get_content().strip() for part in first.iter_parts()] == ["Alles gut.", "<p>Alles gut.</p>"]
