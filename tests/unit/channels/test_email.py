"""What the email channel's SMTP error mapping says about the recipient, in-process."""

from __future__ import annotations

import smtplib

import pytest

from broadcaster.core.errors import DeliveryError, PermanentError, TransientError
from channels.email import _smtp_errors


def mapped(exc: Exception) -> DeliveryError:
    with pytest.raises(DeliveryError) as raised, _smtp_errors("mail.example.com", 587):
        raise exc
    return raised.value


def test_a_mailbox_refused_at_rcpt_with_5xx_is_gone() -> None:
    error = mapped(smtplib.SMTPRecipientsRefused({"bo@example.com": (550, b"5.1.1 mailbox unavailable")}))
    assert isinstance(error, PermanentError) and error.recipient == "invalid"
    assert str(error) == "mail.example.com:587 refused the recipient: 550 5.1.1 mailbox unavailable"


def test_a_4xx_refusal_is_transient_and_other_permanent_errors_blame_no_recipient() -> None:
    assert type(mapped(smtplib.SMTPRecipientsRefused({"bo@example.com": (450, b"busy")}))) is TransientError
    rejected = mapped(smtplib.SMTPDataError(554, b"5.7.1 message rejected"))
    assert isinstance(rejected, PermanentError) and rejected.recipient is None
    login = mapped(smtplib.SMTPAuthenticationError(535, b"bad credentials"))
    assert isinstance(login, PermanentError) and login.recipient is None
