"""SMS through Twilio's Messages API: one message per recipient, rendered to the fewest segments.

Carriers bill per segment, and one character outside the GSM-7 alphabet switches the whole message to
UCS-2, which holds 70 characters per segment instead of 160. So ``shape`` replaces typographic characters
(curly quotes, dashes, ellipses, odd spaces, accents GSM-7 lacks) with their plain GSM-7 equivalents and keeps
UCS-2 only when a character has none (CJK, emoji), with a warning naming it. The GSM-7 alphabet is a small
table of our own (3GPP TS 23.038, basic set and extension table) rather than a dependency.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, ClassVar
from urllib.parse import urlencode, urlsplit, urlunsplit

import certifi
import phonenumbers
import requests
import urllib3
from pydantic import AfterValidator, Field, SecretStr, field_validator, model_validator
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http import HttpClient
from twilio.http.response import Response
from twilio.rest import Client

from broadcaster.errors import DeliveryError, PermanentError, RateLimited, TransientError
from channels.base import Channel, HttpChannelConfig, Message, SendContext, SendResult, public_url, retry_after_seconds
from channels.fitting import ELLIPSIS, shorten

TWILIO_API = "https://api.twilio.com"

# --- configuration ---------------------------------------------------------------------------------------

_E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")


def _e164(value: str) -> str:
    """A phone number written in E.164 (``+14155550100``) that ``phonenumbers`` knows to be valid."""
    hint = ""
    if not _E164.match(value):
        hint = " (write it as + and the country code and number, digits only, e.g. +14155550100)"
    else:
        try:
            valid = phonenumbers.is_valid_number(phonenumbers.parse(value, None))
        except phonenumbers.NumberParseException:
            valid = False
        if valid:
            return value
    raise ValueError(f"{value!r} is not a valid E.164 phone number{hint}")


def _sid(prefix: str) -> AfterValidator:
    pattern = re.compile(rf"^{prefix}[0-9a-f]{{32}}$")

    def check(value: str) -> str:
        if not pattern.match(value):
            raise ValueError(f"must be {prefix!r} followed by 32 lower-case hex characters")
        return value

    return AfterValidator(check)


E164 = Annotated[str, AfterValidator(_e164)]
#: segments per SMS: 3 by default; at most 10 (10 GSM-7 parts of 153 stay under Twilio's 1,600 characters)
DEFAULT_MAX_SEGMENTS, MAX_SEGMENTS = 3, 10


class SmsConfig(HttpChannelConfig):
    account_sid: Annotated[str, _sid("AC")]
    auth_token: SecretStr
    from_number: E164 | None = None
    messaging_service_sid: Annotated[str, _sid("MG")] | None = None
    recipients: list[E164] = Field(default_factory=list)
    #: the cost ceiling: a text that needs more segments (each billed per recipient) is cut to this many
    max_segments: int = DEFAULT_MAX_SEGMENTS
    #: reserved for subscriber audiences (``"subscribers"``), expanded by the broadcaster, not by this channel
    audience: str | None = None
    api_base_url: str | None = TWILIO_API

    @field_validator("api_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("max_segments", mode="before")
    @classmethod
    def _segment_count(cls, value: Any) -> int:
        # TOML gives an int, the environment a string; a bool or a float is a mistake, not a count
        text = str(value).strip() if isinstance(value, int | str) and not isinstance(value, bool) else ""
        if not text.isdigit() or not 1 <= int(text) <= MAX_SEGMENTS:
            raise ValueError(
                f"must be a whole number from 1 to {MAX_SEGMENTS} (segments per SMS, each billed per recipient), "
                f"not {value!r}"
            )
        return int(text)

    @field_validator("auth_token")
    @classmethod
    def _not_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _sender_and_someone(self) -> SmsConfig:
        if not self.from_number and not self.messaging_service_sid:
            raise ValueError("from_number: an sms channel needs from_number or messaging_service_sid")
        if not self.recipients and not self.audience:
            raise ValueError("recipients: an sms channel needs at least one recipient (or an audience)")
        return self


# --- GSM-7 and segments ----------------------------------------------------------------------------------

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
    units = _units(text, encoding)
    single, part = SEGMENT_SIZES[encoding]
    if sum(units) <= single:
        return 1
    count, used = 1, 0
    for unit in units:
        if used + unit > part:
            count, used = count + 1, 0
        used += unit
    return count


def _units(text: str, encoding: str) -> list[int]:
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
        return sum(_units(piece, encoding))

    budget = single if max_segments == 1 else part * max_segments
    # A part never splits a two-unit character, so it may hold one unit less: give one back until it fits.
    for room in range(budget, max(0, budget - max_segments - 2), -1):
        # the link tells the rest of the story: keep it while any text fits beside it
        cut, _ = shorten(text, link, room, weigh, ellipsis, min_room=1)
        if count_segments(cut, encoding) <= max_segments:
            return cut
    return cut


def _tidy(text: str) -> str:
    """One space between words, no blank lines: every character is paid for."""
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line)


# --- the Twilio client -----------------------------------------------------------------------------------


class _TwilioHttp(HttpClient):
    """The SDK's HTTP client (its documented extension point) on urllib3, sending to ``api_base_url``.

    The SDK's own client goes through requests, whose preparation of each request (hooks, cookies, settings
    merged from the environment) cost as much CPU as the rest of an SMS; a fan-out sends thousands. The SDK
    builds ``https://<product>.twilio.com`` URLs itself (no option points it elsewhere), so the scheme and
    host are rewritten here; a path in ``api_base_url`` is kept as a prefix for proxies. The last answer's
    status and ``Retry-After``, which the SDK's exceptions drop, are kept for the error mapping.
    """

    def __init__(self, base_url: str | None, timeout: float) -> None:
        super().__init__(logging.getLogger("twilio.http_client"), is_async=False, timeout=timeout)
        rebase = base_url and base_url.rstrip("/") != TWILIO_API
        self.base = urlsplit(base_url) if rebase and base_url else None
        target = base_url or TWILIO_API
        # As requests would: the proxy variables (and NO_PROXY) and a CA bundle named in the environment.
        proxy = requests.utils.get_environ_proxies(target).get(urlsplit(target).scheme)
        ca_certs = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()
        options: dict[str, Any] = {"maxsize": 4, "retries": False, "ca_certs": ca_certs}
        self.pool = urllib3.ProxyManager(proxy, **options) if proxy else urllib3.PoolManager(**options)
        self.last_status: int | None = None
        self.last_retry_after: str | None = None

    def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        self.last_status = self.last_retry_after = None
        parts = urlsplit(url)
        host = parts.hostname or ""
        # Any Twilio host: TWILIO_EDGE/TWILIO_REGION and other products (messaging.twilio.com) name their own.
        if self.base is not None and (host == "twilio.com" or host.endswith(".twilio.com")):
            path = self.base.path.rstrip("/") + parts.path
            url = urlunsplit((self.base.scheme, self.base.netloc, path, parts.query, parts.fragment))
        if params:
            url += ("&" if "?" in url else "?") + urlencode(params, doseq=True)
        headers = dict(headers or {})
        if auth is not None:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        body: str | None = None
        if data is not None:
            if headers.get("Content-Type") in ("application/json", "application/scim+json"):
                body = json.dumps(data)
            else:
                body = urlencode(data, doseq=True)
                headers["Content-Type"] = "application/x-www-form-urlencoded"
        answer = self.pool.request(
            method.upper(), url, body=body, headers=headers, timeout=timeout or self.timeout, redirect=allow_redirects
        )
        self.last_status = answer.status
        self.last_retry_after = answer.headers.get("Retry-After")
        return Response(answer.status, answer.data.decode("utf-8", errors="replace"), answer.headers)

    def close(self) -> None:
        self.pool.clear()


#: Twilio error codes that no retry can fix, and what they mean for the reader of a failed delivery
PERMANENT_CODES = {
    20003: "authentication failed: check account_sid and auth_token",
    21211: "invalid 'To' number",
    21408: "sending to this region is not enabled on the account",
    21610: "the recipient has unsubscribed (replied STOP)",
    21614: "the 'To' number is not a mobile number",
}
RATE_LIMIT_CODE = 20429


class SmsChannel(Channel[SmsConfig]):
    type: ClassVar[str] = "sms"
    Config = SmsConfig
    templates: ClassVar[dict[str, str]] = {"body": "body.txt"}

    def __init__(self, name: str, config: SmsConfig) -> None:
        super().__init__(name, config)
        self._http: _TwilioHttp | None = None
        self._client: Client | None = None

    def targets(self) -> list[str]:
        return list(self.config.recipients)

    def shape(self, parts: dict[str, str], context: dict[str, Any]) -> Message:
        text, forcing = to_gsm(parts["body"])
        text = _tidy(text)
        warnings: list[str] = []
        encoding = UCS2 if forcing else GSM7
        segments = count_segments(text, encoding)
        size: dict[str, Any] = {}
        limit = self.config.max_segments
        if segments > limit:
            link = (context.get("incident") or {}).get("url") or None
            text = fit_segments(text, link, encoding, limit)
            warnings.append(
                f"cut to {limit} segment{'s' if limit > 1 else ''} (max_segments; the full text takes {segments})"
            )
            size["full_segments"] = segments
            segments = count_segments(text, encoding)
            if link and link not in text:
                warnings.append(
                    f"the incident link does not fit in {limit} {encoding} segment{'s' if limit > 1 else ''}"
                )
        if forcing:
            chars = ", ".join(repr(c) for c in forcing[:5])
            warnings.append(f"UCS-2 forced by {chars} ({SEGMENT_SIZES[UCS2][0]} characters per segment, not 160)")
        if segments > 1:
            warnings.append(f"{segments} segments per recipient ({encoding}, {len(text)} characters)")
        return Message(
            parts={"body": text},
            size={"segments": segments, "encoding": encoding, "characters": len(text), **size},
            warnings=warnings,
        )

    def client(self) -> Client:
        if self._client is None:
            self._http = _TwilioHttp(self.config.api_base_url, self.config.timeout.total_seconds())
            token = self.config.auth_token.get_secret_value()
            self._client = Client(self.config.account_sid, token, http_client=self._http)
        return self._client

    def send(self, message: Message, target: str, context: SendContext) -> SendResult:
        sender: dict[str, str] = {}
        if self.config.messaging_service_sid:
            sender["messaging_service_sid"] = self.config.messaging_service_sid
        if self.config.from_number:
            sender["from_"] = self.config.from_number
        with self._errors(f"to {target}"):
            created = self.client().messages.create(to=target, body=message.parts["body"], **sender)
        return SendResult(provider_id=created.sid, note=f"{created.status}, {created.num_segments} segment(s)")

    def check(self) -> str:
        config = self.config
        with self._errors(f"for account {config.account_sid}"):
            account_api = self.client().api.v2010.accounts(config.account_sid)
            account = account_api.fetch()
            if account.status != "active":
                raise PermanentError(f"account {account.friendly_name} ({config.account_sid}) is {account.status}")
            found = [f"account {account.friendly_name} active"]
            if config.from_number:
                if not account_api.incoming_phone_numbers.list(phone_number=config.from_number, limit=1):
                    raise PermanentError(
                        f"sender {config.from_number} is not a number of account {account.friendly_name}"
                    )
                found.append(f"sender {config.from_number} owned")
            if config.messaging_service_sid:
                service = self.client().messaging.v1.services(config.messaging_service_sid).fetch()
                found.append(f"messaging service {service.friendly_name} ({service.sid})")
        return ", ".join(found)

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
        self._http = self._client = None

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Translate the SDK's and urllib3's exceptions into ours, at this one boundary."""
        try:
            yield
        except DeliveryError:
            raise
        except urllib3.exceptions.HTTPError as exc:
            # urllib3 makes a refused connection a kind of timeout too (NewConnectionError), for old callers
            if isinstance(exc, urllib3.exceptions.TimeoutError) and not isinstance(
                exc, urllib3.exceptions.NewConnectionError
            ):
                timeout = self.config.timeout.total_seconds()
                raise TransientError(f"no answer from Twilio ({self._where()}) within {timeout:g}s") from exc
            raise TransientError(f"cannot reach Twilio ({self._where()}): {type(exc).__name__}") from exc
        except TwilioException as exc:
            raise self._translate(exc, what) from exc
        except ValueError as exc:  # a 2xx answer whose body is not the JSON the SDK expects
            raise TransientError(f"unreadable answer from Twilio ({self._where()}) {what}: {exc}") from exc

    def _translate(self, exc: TwilioException, what: str) -> DeliveryError:
        status: int | None
        if isinstance(exc, TwilioRestException):
            status, code, text = exc.status, exc.code, _provider_text(exc.msg)
        elif isinstance(exc, TwilioServiceException):
            status, code, text = exc.status, exc.code, exc.detail or exc.title
        else:  # e.g. a list page that did not answer 200: the status is only on our http client
            status = self._http.last_status if self._http else None
            code, text = None, str(exc.args[0]) if exc.args else type(exc).__name__
        meaning = PERMANENT_CODES.get(code) if code else None
        head = f"Twilio error {code} (HTTP {status})" if code and code != status else f"Twilio answered HTTP {status}"
        reason = f"{head} {what}: {text}" + (f" ({meaning})" if meaning else "")
        reason = reason.replace(self.config.auth_token.get_secret_value(), "***")
        if code == RATE_LIMIT_CODE or status == 429:
            retry_after = retry_after_seconds(self._http.last_retry_after if self._http else None)
            return RateLimited(reason, retry_after=retry_after)
        if meaning or (status is not None and 400 <= status < 500 and status != 408):
            return PermanentError(reason)
        return TransientError(reason)

    def _where(self) -> str:
        return public_url(self.config.api_base_url or TWILIO_API)


def _provider_text(msg: str) -> str:
    """The SDK prefixes Twilio's message with its own ("Unable to create record: ..."); keep Twilio's."""
    prefix, sep, rest = msg.partition(": ")
    return rest if sep and prefix.startswith("Unable to") else msg
