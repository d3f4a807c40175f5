"""The mail server's stand-in: the sandbox's SMTP server (``broadcaster.sandbox.smtp``), and a channel table for it."""

from __future__ import annotations

from typing import Any

from channels.emulation import Emulator

RECIPIENTS = ["ana@example.com", "bo@example.com", "chen@example.com"]


class MailEmulator(Emulator):
    type = "email"
    demo_name = "customers"

    def script_demo(self) -> list[str]:
        self.sandbox.smtp.reject.add(RECIPIENTS[1])
        return [f"{RECIPIENTS[1]} is refused by the mail server (550): failed after 1 attempt"]

    def channel_config(self, name: str) -> dict[str, Any]:
        return {
            "type": "email",
            "host": "127.0.0.1",
            "port": self.sandbox.smtp.port,
            "starttls": False,
            "sender": "status@example.com",
            "recipients": list(RECIPIENTS),
        }
