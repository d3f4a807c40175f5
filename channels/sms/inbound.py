"""Twilio's "a message comes in" webhook (``POST /webhooks/twilio``): STOP unsubscribes, START subscribes again.

The request must carry Twilio's signature (``X-Twilio-Signature``) of the URL it called, under the auth token
of an sms channel of the posting account (``AccountSid``). The URL is the one the API says Twilio called
(``InboundRequest.url``: ``[subscribers] api_url`` when set, so a request signed for another host is refused
whatever ``Host`` it claims). Each MessageSid is acted on once (the ``Inbox`` remembers it), so a replayed
signed request (a START after the number's STOP) changes nothing. The answer is TwiML without a reply:
Twilio's own opt-out handling already answers STOP and START.
"""

from __future__ import annotations

import re
from typing import ClassVar

from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from channels.base import InboundRefused, InboundRequest, InboundWebhook
from channels.sms.config import SmsConfig

#: Twilio's standard opt-out and opt-in keywords (the whole message, any case)
STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"})
START_WORDS = frozenset({"START", "YES", "UNSTOP"})
#: a Twilio message SID: SM (or MM for MMS) and 32 hexadecimal digits
MESSAGE_SID = re.compile(r"^[A-Z]{2}[0-9a-fA-F]{32}$")


def keyword(body: str) -> str | None:
    """The STOP or START word that the whole message is (any case), else None."""
    word = body.strip().upper()
    return word if word in STOP_WORDS or word in START_WORDS else None


class TwilioInbound(InboundWebhook):
    path: ClassVar[str] = "/webhooks/twilio"
    summary: ClassVar[str] = "Twilio's inbound-message webhook: STOP unsubscribes, START subscribes again"
    fields: ClassVar[tuple[str, ...]] = ("AccountSid", "MessageSid", "From", "To", "Body")
    media_type: ClassVar[str] = "application/xml"
    answer: ClassVar[str] = "TwiML, without a reply."
    refusals: ClassVar[dict[int, str]] = {
        403: "The X-Twilio-Signature is missing or not valid for any sms channel of the account.",
        422: "The signed request has no valid MessageSid.",
    }

    def signed(self, request: InboundRequest) -> bool:
        """Whether the request carries Twilio's signature under the auth token of an sms channel of its account."""
        signature = request.headers.get("x-twilio-signature")
        if not signature:
            return False
        account = request.form.get("AccountSid")
        tokens = {
            config.auth_token.get_secret_value()
            for config in self.configs
            if isinstance(config, SmsConfig) and config.account_sid == account
        }
        return any(RequestValidator(token).validate(request.url, request.form, signature) for token in tokens)

    def receive(self, request: InboundRequest) -> str:
        if not self.signed(request):
            raise InboundRefused(403, "the request is not signed by Twilio for a configured account")
        sid = request.form.get("MessageSid", "")
        if not MESSAGE_SID.fullmatch(sid):
            raise InboundRefused(422, "missing, or not a Twilio message SID", field="MessageSid")
        word = keyword(request.form.get("Body", ""))
        phone = request.form.get("From", "")
        if word in STOP_WORDS:
            self.inbox.unsubscribe("phone", phone, sid)
        elif word in START_WORDS:
            self.inbox.resubscribe("phone", phone, sid)  # it just texted us: the number works
        return str(MessagingResponse())
