"""HTTP endpoints for subscribers: /v1/subscribers, one-click unsubscribe, Twilio's inbound STOP/START."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
