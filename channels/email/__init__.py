"""Email over SMTP: one multipart/alternative message per recipient.

A subscriber's email (a channel with ``audience = "subscribers"``) also carries its own one-click unsubscribe
link: in the ``List-Unsubscribe`` and ``List-Unsubscribe-Post`` headers (RFC 8058) and in a footer rendered
from ``unsubscribe.txt``/``unsubscribe.html`` with the link in place of ``UNSUBSCRIBE_MARK``.
"""

from __future__ import annotations

import html
import re
import secrets
import smtplib
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import Compat32
from email.utils import formataddr, formatdate, parseaddr
from typing import Any, ClassVar

from pydantic import SecretStr, field_validator, model_validator

from broadcaster.core.errors import PermanentError, RecipientVerdict, TransientError
from broadcaster.core.units import Duration
from channels.base import UNSUBSCRIBE_MARK, Channel, ChannelConfig, Message, SendContext, SendResult

#: a kept SMTP session idle longer than this (seconds) is checked with NOOP before the next send
IDLE_CHECK = 5.0


class _Unfolded(Compat32):
    """compat32, but with header lines up to RFC 5322's limit: folding would split a long unsubscribe link from
    its header name, and some readers keep the fold's leading space. A plain ASCII line that fits is written as
    it is: compat32 passes every header through a ``Header`` object, a third of an email's CPU in a fan-out."""

    #: smtplib asks for it (``clone(utf8=True)``) to send to an address outside ASCII (SMTPUTF8)
    utf8 = False

    def _fold(self, name: str, value: Any, sanitize: bool) -> str:
        if isinstance(value, str) and _PLAIN_LINE.fullmatch(value) and len(name) + len(value) + 2 <= 998:
            return f"{name}: {value}{self.linesep}"
        return str(super()._fold(name, value, sanitize))  # type: ignore[misc]


#: a header value that compat32 would write unchanged: printable ASCII, no line break, no leading or double space
_PLAIN_LINE = re.compile(r"[!-~]+(?: [!-~]+)*")
UNFOLDED = _Unfolded(max_line_length=998)
#: an address without a display name or comment, as subscribers' are
_BARE_ADDRESS = re.compile(r'[^\s<>()\[\]",;:@]+@[^\s<>()\[\]",;:@]+')
#: the footer parts a channel with an audience renders for its subscribers
FOOTER_TEXT, FOOTER_HTML = "unsubscribe_text", "unsubscribe_html"


def _address(value: str) -> str:
    _, address = parseaddr(value)
    local, _, domain = address.rpartition("@")
    if not local or "." not in domain or any(c.isspace() for c in address):
        raise ValueError(f"not an email address: {value!r}")
    return value


class EmailConfig(ChannelConfig):
    host: str
    port: int = 587
    starttls: bool = True
    ssl: bool = False
    username: str | None = None
    password: SecretStr | None = None
    sender: str
    recipients: list[str] = []
    reply_to: str | None = None
    timeout: Duration = timedelta(seconds=30)
    audience: str | None = None

    @field_validator("sender", "reply_to")
    @classmethod
    def _one_address(cls, value: str | None) -> str | None:
        return _address(value) if value is not None else None

    @field_validator("recipients")
    @classmethod
    def _recipients(cls, values: list[str]) -> list[str]:
        return [_address(value) for value in values]

    @model_validator(mode="after")
    def _someone(self) -> EmailConfig:
        if not self.recipients and not self.audience:
            raise ValueError("recipients: an email channel needs at least one recipient")
        if self.audience is not None and self.audience != "subscribers":
            raise ValueError(f'audience: must be "subscribers", not {self.audience!r}')
        if self.ssl and self.starttls and self.port == 465:
            self.starttls = False
        return self


class EmailChannel(Channel[EmailConfig]):
    type: ClassVar[str] = "email"
    Config = EmailConfig
    templates: ClassVar[dict[str, str]] = {
        "subject": "subject.txt",
        "text": "body.txt",
        "html": "body.html",
        FOOTER_TEXT: "unsubscribe.txt",
        FOOTER_HTML: "unsubscribe.html",
    }
    subscriber_kind = "email"
    emulator = "channels.email.emulator:MailEmulator"

    def __init__(self, name: str, config: EmailConfig) -> None:
        super().__init__(name, config)
        self._smtp: smtplib.SMTP | None = None
        self._used = 0.0
        self._from = _address_header(config.sender)
        self._reply_to = _address_header(config.reply_to) if config.reply_to else None
        self._envelope_from = parseaddr(config.sender)[1]
        self._domain = self._envelope_from.rpartition("@")[2]

    def targets(self) -> list[str]:
        return list(self.config.recipients)

    def shape(self, parts: dict[str, str], context: dict[str, Any]) -> Message:
        message = super().shape(parts, context)
        if not self.config.audience:  # no subscribers, no footer
            message.parts.pop(FOOTER_TEXT, None)
            message.parts.pop(FOOTER_HTML, None)
        message.parts["subject"] = " ".join(message.parts["subject"].split())
        message.size = {"subject": message.parts["subject"]}
        return message

    def compose(
        self, message: Message, target: str, delivery_id: str, unsubscribe_url: str | None = None
    ) -> MIMEMultipart:
        """The email to ``target``; with ``unsubscribe_url`` (a subscriber's), its headers and footer too.

        Built with the ``compat32`` classes, as Django's mail does: the modern ``EmailMessage`` parses every
        header it is given, which made composing cost more CPU than sending in a large fan-out.
        """
        # "=_" never occurs in base64 (our parts' encoding), so the generator need not search the parts for the
        # boundary, which costs it a regular expression compiled per message.
        email = MIMEMultipart("alternative", boundary=f"=_{secrets.token_hex(16)}", policy=UNFOLDED)
        email["From"] = self._from
        email["To"] = _address_header(target)
        email["Subject"] = _header(message.parts["subject"])
        email["Date"] = formatdate(localtime=False, usegmt=True)
        # One Message-ID per delivery, the same on every retry, so receivers can drop a duplicate.
        email["Message-ID"] = f"<{delivery_id}@{self._domain}>"
        if self._reply_to:
            email["Reply-To"] = self._reply_to
        text, body_html = message.parts["text"], message.parts["html"]
        if unsubscribe_url:
            email["List-Unsubscribe"] = f"<{unsubscribe_url}>"
            email["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
            footer = message.parts.get(FOOTER_TEXT, "").replace(UNSUBSCRIBE_MARK, unsubscribe_url)
            footer_html = message.parts.get(FOOTER_HTML, "").replace(UNSUBSCRIBE_MARK, html.escape(unsubscribe_url))
            text = f"{text}\n\n{footer}" if footer else text
            body_html = _before_body_end(body_html, footer_html) if footer_html else body_html
        email.attach(MIMEText(text + "\n", "plain", "utf-8", policy=UNFOLDED))
        email.attach(MIMEText(body_html + "\n", "html", "utf-8", policy=UNFOLDED))
        return email

    def connect(self) -> smtplib.SMTP:
        config = self.config
        timeout = config.timeout.total_seconds()
        if config.ssl:
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(config.host, config.port, timeout=timeout)
        else:
            smtp = smtplib.SMTP(config.host, config.port, timeout=timeout)
        try:
            smtp.ehlo()
            if config.starttls and not config.ssl:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if config.username:
                password = config.password.get_secret_value() if config.password else ""
                smtp.login(config.username, password)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def send(self, message: Message, target: str, context: SendContext) -> SendResult:
        email = self.compose(message, target, context.delivery_id, context.unsubscribe_url)
        with _smtp_errors(self.config.host, self.config.port):
            smtp = self._session()
            try:
                smtp.send_message(email, from_addr=self._envelope_from, to_addrs=[_bare(target)])
            except BaseException:
                self.close()  # a session in an unknown state is not reused
                raise
            self._used = time.monotonic()
        return SendResult(provider_id=str(email["Message-ID"]))

    def _session(self) -> smtplib.SMTP:
        """The SMTP session kept open between sends; one idle for a while is checked first (servers drop them)."""
        if self._smtp is not None and time.monotonic() - self._used > IDLE_CHECK:
            try:
                self._smtp.noop()
            except (smtplib.SMTPException, OSError):
                self.close()
        if self._smtp is None:
            self._smtp = self.connect()
        return self._smtp

    def close(self) -> None:
        if self._smtp is not None:
            _quietly_quit(self._smtp)
            self._smtp = None

    def check(self) -> str:
        with _smtp_errors(self.config.host, self.config.port):
            smtp = self.connect()
            _quietly_quit(smtp)
        steps = (
            ["connected"] + (["STARTTLS"] if self.config.starttls else []) + (["login"] if self.config.username else [])
        )
        return f"{self.config.host}:{self.config.port}: " + ", ".join(steps)


@contextmanager
def _smtp_errors(host: str, port: int) -> Iterator[None]:
    """Map smtplib's and the socket's exceptions into transient or permanent errors."""
    where = f"{host}:{port}"
    try:
        yield
    except smtplib.SMTPRecipientsRefused as exc:
        code, reply = next(iter(exc.recipients.values()))
        # a mailbox refused at RCPT with a 5xx reply: the address is gone
        raise _by_code(code, f"{where} refused the recipient: {code} {_text(reply)}", recipient="invalid") from exc
    except smtplib.SMTPAuthenticationError as exc:
        raise PermanentError(f"{where} rejected the login: {exc.smtp_code} {_text(exc.smtp_error)}") from exc
    except smtplib.SMTPResponseException as exc:
        raise _by_code(exc.smtp_code, f"{where} answered {exc.smtp_code} {_text(exc.smtp_error)}") from exc
    except smtplib.SMTPNotSupportedError as exc:
        raise PermanentError(f"{where}: {exc}") from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise TransientError(f"cannot deliver through {where}: {type(exc).__name__}: {exc}") from exc


def _header(value: str) -> str:
    """A header value: ASCII as it is, anything else as RFC 2047 encoded words."""
    return value if value.isascii() else Header(value, "utf-8").encode()


def _bare(value: str) -> str:
    """The address alone, for the envelope: ``Zoë <zoe@example.com>`` is ``zoe@example.com``."""
    return value if _BARE_ADDRESS.fullmatch(value) else parseaddr(value)[1]


def _address_header(value: str) -> str:
    """An address with its display name (encoded when it is not ASCII)."""
    if _BARE_ADDRESS.fullmatch(value):  # most subscribers': nothing to parse
        return value
    name, address = parseaddr(value)
    return formataddr((name, address), charset="utf-8") if name else address


def _before_body_end(document: str, footer: str) -> str:
    """``footer`` inside the HTML document's body, at its end."""
    end = document.lower().rfind("</body>")
    return f"{document[:end]}{footer}\n{document[end:]}" if end >= 0 else f"{document}\n{footer}"


def _by_code(code: int, reason: str, recipient: RecipientVerdict | None = None) -> TransientError | PermanentError:
    """A 5xx reply is permanent (``recipient``: what it says about the recipient), anything else transient."""
    return PermanentError(reason, recipient=recipient) if 500 <= code < 600 else TransientError(reason)


def _text(reply: bytes | str) -> str:
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
    return " ".join(text.split())


def _quietly_quit(smtp: smtplib.SMTP) -> None:
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()
