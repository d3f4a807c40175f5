"""SMS through Twilio's Messages API: one message per recipient, rendered to the fewest segments.

``shape`` replaces typographic characters with their plain GSM-7 equivalents and keeps UCS-2 only when a
character has none (CJK, emoji), with a warning naming it (``channels.sms.gsm``: one character outside GSM-7
makes the whole message UCS-2, 70 characters a segment instead of 160). Errors about the number itself mark
the recipient gone (``PermanentError.recipient``), so a subscriber's number is quarantined or unsubscribed;
STOP and START replies come in through ``channels.sms.inbound``.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar
from urllib.parse import urlencode, urlsplit, urlunsplit

import certifi
import requests
import urllib3
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http import HttpClient
from twilio.http.response import Response
from twilio.rest import Client

from broadcaster.core.errors import DeliveryError, PermanentError, RateLimited, RecipientVerdict, TransientError
from channels.base import Channel, Message, SendContext, SendResult, public_url, retry_after_seconds
from channels.sms.config import TWILIO_API, SmsConfig
from channels.sms.gsm import GSM7, SEGMENT_SIZES, UCS2, count_segments, fit_segments, tidy, to_gsm
from channels.sms.inbound import TwilioInbound

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
#: Twilio errors that blame the number itself (invalid, not a mobile, unreachable by SMS)
BAD_NUMBER_CODES = frozenset({21211, 21217, 21401, 21421, 21612, 21614})
#: the recipient replied STOP to this sender: Twilio refuses to send to it until it replies START
UNSUBSCRIBED_CODE = 21610


class SmsChannel(Channel[SmsConfig]):
    type: ClassVar[str] = "sms"
    Config = SmsConfig
    templates: ClassVar[dict[str, str]] = {"body": "body.txt"}
    subscriber_kind = "phone"
    inbound = TwilioInbound
    emulator = "channels.sms.emulator:TwilioEmulator"

    def __init__(self, name: str, config: SmsConfig) -> None:
        super().__init__(name, config)
        self._http: _TwilioHttp | None = None
        self._client: Client | None = None

    def targets(self) -> list[str]:
        return list(self.config.recipients)

    def shape(self, parts: dict[str, str], context: dict[str, Any]) -> Message:
        text, forcing = to_gsm(parts["body"])
        text = tidy(text)
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
            return PermanentError(reason, recipient=_recipient(exc))
        return TransientError(reason)

    def _where(self) -> str:
        return public_url(self.config.api_base_url or TWILIO_API)


def _provider_text(msg: str) -> str:
    """The SDK prefixes Twilio's message with its own ("Unable to create record: ..."); keep Twilio's."""
    prefix, sep, rest = msg.partition(": ")
    return rest if sep and prefix.startswith("Unable to") else msg


def _recipient(exc: TwilioException) -> RecipientVerdict | None:
    """What a Twilio error says about the recipient: opted out (STOP), or a number that cannot take SMS."""
    if not isinstance(exc, TwilioRestException):
        return None
    if exc.code == UNSUBSCRIBED_CODE:
        return "unsubscribed"
    return "invalid" if exc.code in BAD_NUMBER_CODES else None
