"""The blog's webhook receiver: verifies the Standard Webhooks signature like a real receiver would."""

from __future__ import annotations

import re
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from channels.emulation import Answer, Emulator, Faults, Request

SECRET = "whsec_c2FuZGJveC1ibG9nLXNpZ25pbmcta2V5LTAwMDE="


class BlogReceiver(Emulator):
    type = "webhook"
    demo_name = "blog"

    def install(self) -> None:
        self.sandbox.http.route("POST", r"/blog/(?P<name>[a-z0-9-]+)", "webhook", self.receive)

    def receive(self, request: Request, match: re.Match[str]) -> Answer:
        try:
            Webhook(SECRET).verify(request.body, request.headers)
        except WebhookVerificationError as exc:
            request.note["verified"] = False
            return Answer(401, {"error": f"signature: {exc}"})
        request.note["verified"] = True
        return Answer(200, {"received": request.header("webhook-id")})

    def script_demo(self) -> list[str]:
        self.sandbox.http.script(
            "webhook", Answer(500, {"error": "blog is restarting"}), Answer(503, {"error": "busy"})
        )
        return ["the blog webhook answers 500 and 503, then accepts: delivered on attempt 3"]

    def faults(self) -> Faults:
        return Faults(
            "webhook",
            Answer(429, {"error": "slow down"}, headers={"Retry-After": "3"}),
            Answer(503, {"error": "maintenance"}),
            Answer(400, {"error": "bad payload"}),
        )

    def channel_config(self, name: str) -> dict[str, Any]:
        return {"type": "webhook", "url": f"{self.sandbox.http.url}/blog/{name}", "secret": SECRET}
