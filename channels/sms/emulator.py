"""Twilio's REST API as the SMS channel uses it: send a message, fetch the account, list the owned numbers.

Answers have Twilio's shapes and error codes, so the real ``twilio`` SDK parses them as it would Twilio's.
"""

from __future__ import annotations

import base64
import re
import threading
import uuid
from email.utils import formatdate
from typing import Any

from channels.emulation import Answer, Emulator, Faults, Request
from channels.sms.gsm import count_segments

ACCOUNT_SID = "AC0000000000000000000000005a4db0c5"
AUTH_TOKEN = "sandbox-auth-token"
MESSAGING_SERVICE_SID = "MG0000000000000000000000005a4db0c6"
#: Twilio's own magic "from" number for test credentials
FROM_NUMBER = "+15005550006"
RECIPIENTS = ["+14155550100", "+14155550101", "+14155550102"]
FRIENDLY_NAME = "Sandbox account"
SERVICE_NAME = "Sandbox notifications"
_E164 = re.compile(r"^\+[1-9][0-9]{7,14}$")
_ACCOUNT = r"/2010-04-01/Accounts/(?P<sid>AC[0-9a-f]{32})"


def twilio_error(status: int, code: int, message: str) -> Answer:
    """An error body as Twilio's 2010 API writes it."""
    more = f"https://www.twilio.com/docs/errors/{code}"
    return Answer(status, {"code": code, "message": message, "more_info": more, "status": status})


class TwilioEmulator(Emulator):
    type = "sms"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reject: set[str] = set()
        self.owned_numbers = {FROM_NUMBER}
        self._lock = threading.Lock()

    def install(self) -> None:
        http = self.sandbox.http
        http.route("POST", _ACCOUNT + r"/Messages\.json", "twilio.message", self.create_message)
        http.route("GET", _ACCOUNT + r"\.json", "twilio.account", self.fetch_account)
        http.route("GET", _ACCOUNT + r"/IncomingPhoneNumbers\.json", "twilio.numbers", self.list_numbers)
        http.route("GET", r"/v1/Services/(?P<sid>MG[0-9a-f]{32})", "twilio.service", self.fetch_service)

    def reset(self) -> None:
        """Forget the rejected numbers."""
        with self._lock:
            self.reject.clear()

    def reject_one(self) -> str:
        """Make Twilio refuse one default recipient as an invalid number; say what a viewer should expect."""
        number = RECIPIENTS[1]
        with self._lock:
            self.reject.add(number)
        return f"{number} is refused by Twilio as an invalid number (21211): failed after 1 attempt"

    def script_demo(self) -> list[str]:
        return [self.reject_one()]

    def faults(self) -> Faults:
        return Faults(
            "twilio.message",
            Answer(429, {"code": 20429, "message": "Too Many Requests", "status": 429}, headers={"Retry-After": "3"}),
            Answer(503, {"code": 20500, "message": "Service Unavailable", "status": 503}),
            Answer(400, {"code": 21211, "message": "The 'To' number is not a valid phone number.", "status": 400}),
        )

    def channel_config(self, name: str) -> dict[str, Any]:
        return {
            "type": "sms",
            "account_sid": ACCOUNT_SID,
            "auth_token": AUTH_TOKEN,
            "from_number": FROM_NUMBER,
            "recipients": list(RECIPIENTS),
            "api_base_url": self.sandbox.http.url,
        }

    # --- endpoints ---

    def create_message(self, request: Request, match: re.Match[str]) -> Answer:
        denied = self._authenticate(request, match["sid"])
        if denied:
            return denied
        form = {key: values[0] for key, values in request.form.items()}
        to, sender, service, body = (form.get(k, "") for k in ("To", "From", "MessagingServiceSid", "Body"))
        with self._lock:
            rejected = to in self.reject
        if not to:
            return twilio_error(400, 21604, "A 'To' phone number is required.")
        if rejected or not _E164.match(to):
            return twilio_error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if not sender and not service:
            return twilio_error(400, 21603, "A 'From' phone number is required.")
        if service and service != MESSAGING_SERVICE_SID:
            return twilio_error(400, 21705, f"The Messaging Service Sid {service} is invalid.")
        if sender and sender not in self.owned_numbers:
            return twilio_error(
                400, 21606, f"The From phone number {sender} is not a valid, SMS-capable inbound phone number "
                "or short code for your account.",
            )  # fmt: skip
        if not body:
            return twilio_error(400, 21602, "Message body is required.")
        if len(body) > 1600:
            return twilio_error(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
        sid = "SM" + uuid.uuid4().hex
        request.note.update(sid=sid, to=to, body=body)
        now = formatdate(usegmt=True)
        return Answer(
            201,
            {
                "sid": sid,
                "account_sid": match["sid"],
                "messaging_service_sid": service or None,
                "status": "queued" if sender else "accepted",
                "to": to,
                "from": sender or None,
                "body": body,
                "num_segments": str(count_segments(body)),
                "direction": "outbound-api",
                "date_created": now,
                "date_updated": now,
                "date_sent": None,
                "error_code": None,
                "error_message": None,
                "uri": f"/2010-04-01/Accounts/{match['sid']}/Messages/{sid}.json",
            },
        )

    def fetch_account(self, request: Request, match: re.Match[str]) -> Answer:
        denied = self._authenticate(request, match["sid"])
        if denied:
            return denied
        return Answer(
            200,
            {
                "sid": match["sid"],
                "owner_account_sid": match["sid"],
                "friendly_name": FRIENDLY_NAME,
                "status": "active",
                "type": "Full",
                "date_created": "Mon, 01 Jan 2024 00:00:00 +0000",
                "date_updated": "Mon, 01 Jan 2024 00:00:00 +0000",
                "uri": f"/2010-04-01/Accounts/{match['sid']}.json",
            },
        )

    def list_numbers(self, request: Request, match: re.Match[str]) -> Answer:
        denied = self._authenticate(request, match["sid"])
        if denied:
            return denied
        wanted = request.params.get("PhoneNumber")
        numbers = sorted(n for n in self.owned_numbers if wanted in (None, n))
        records = [
            {
                "sid": "PN" + uuid.uuid5(uuid.NAMESPACE_URL, number).hex,
                "account_sid": match["sid"],
                "phone_number": number,
                "friendly_name": number,
                "capabilities": {"sms": True, "mms": False, "voice": True, "fax": False},
                "status": "in-use",
            }
            for number in numbers
        ]
        uri = f"/2010-04-01/Accounts/{match['sid']}/IncomingPhoneNumbers.json"
        size = int(request.params.get("PageSize") or 50)
        # Twilio's 2010 list page: the records under one key, and paging keys that the SDK's Page knows
        return Answer(
            200,
            {
                "incoming_phone_numbers": records,
                "page": 0,
                "page_size": size,
                "start": 0,
                "end": max(0, len(records) - 1),
                "uri": uri,
                "first_page_uri": f"{uri}?PageSize={size}&Page=0",
                "next_page_uri": None,
                "previous_page_uri": None,
            },
        )

    def fetch_service(self, request: Request, match: re.Match[str]) -> Answer:
        denied = self._authenticate(request, ACCOUNT_SID)
        if denied:
            return denied
        if match["sid"] != MESSAGING_SERVICE_SID:
            return twilio_error(404, 20404, f"The requested resource /Services/{match['sid']} was not found")
        return Answer(
            200,
            {"sid": MESSAGING_SERVICE_SID, "account_sid": ACCOUNT_SID, "friendly_name": SERVICE_NAME},
        )

    def _authenticate(self, request: Request, account_sid: str) -> Answer | None:
        """Basic auth with the account SID and its token, as Twilio requires; 401 with error 20003 otherwise."""
        expected = "Basic " + base64.b64encode(f"{account_sid}:{AUTH_TOKEN}".encode()).decode()
        if account_sid != ACCOUNT_SID or request.header("Authorization") != expected:
            return twilio_error(401, 20003, "Authenticate")
        return None
