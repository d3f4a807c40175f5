"""The keys of an ``sms`` channel table, checked when the configuration loads."""

from __future__ import annotations

import re
from typing import Annotated, Any

import phonenumbers
from pydantic import AfterValidator, Field, SecretStr, field_validator, model_validator

from channels.base import HttpChannelConfig

#: Twilio's API root; a channel's ``api_base_url`` replaces it (proxies, the sandbox)
TWILIO_API = "https://api.twilio.com"

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
