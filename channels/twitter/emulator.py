"""X API v2 as the twitter channel sees it: ``POST /2/tweets`` and ``GET /2/users/me``, OAuth 1.0a checked.

Like X, it verifies the OAuth 1.0a signature (made for ``https://api.twitter.com``, where tweepy signs it, with
the fake keys below), refuses a tweet over 280 weighted characters, and a text it already accepted since the
last ``reset`` (403 duplicate content). Tweet ids are increasing numbers.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

from oauthlib.oauth1.rfc5849 import signature, utils

from channels.emulation import Answer, Emulator, Faults, Request
from channels.twitter import X_API
from channels.twitter.text import LIMIT, weighted_length

CONSUMER_KEY = "sandbox-consumer-key"
CONSUMER_SECRET = "sandbox-consumer-secret"
ACCESS_TOKEN = "1-sandbox-access-token"
ACCESS_TOKEN_SECRET = "sandbox-access-token-secret"
ACCOUNT = {"id": "1", "name": "Status", "username": "examplestatus"}


def problem(status: int, title: str, detail: str, kind: str = "about:blank") -> dict[str, Any]:
    """An error body as the X API v2 writes it (RFC 9457 problem details)."""
    return {"title": title, "detail": detail, "type": kind, "status": status}


UNAUTHORIZED = problem(401, "Unauthorized", "Unauthorized")
DUPLICATE = problem(403, "Forbidden", "You are not allowed to create a Tweet with duplicate content.")
TOO_LONG = problem(403, "Forbidden", "Your Tweet text is too long.")
INVALID = problem(
    400,
    "Invalid Request",
    "One or more parameters to your request was invalid.",
    "https://api.twitter.com/2/problems/invalid-request",
)


class XEmulator(Emulator):
    type = "twitter"
    demo_name = "x"

    def install(self) -> None:
        self._ids = itertools.count(1_800_000_000_000_000_001)
        self._lock = threading.Lock()
        self.sandbox.http.route("POST", r"/2/tweets", "twitter.tweet", self.tweet)
        self.sandbox.http.route("GET", r"/2/users/me", "twitter.me", self.me)

    def tweet(self, request: Request, match: re.Match[str]) -> Answer:
        if not signed(request):
            return Answer(401, UNAUTHORIZED)
        try:
            text = request.json["text"]
            reply_to = (request.json.get("reply") or {}).get("in_reply_to_tweet_id")
        except (ValueError, KeyError, TypeError, AttributeError):
            return Answer(400, INVALID)
        # what this sandbox accepted since its last reset stands for the account's recent timeline
        accepted = {r.note["text"] for r in self.sandbox.http.received("twitter.tweet") if "id" in r.note}
        if text in accepted:
            return Answer(403, DUPLICATE)
        if weighted_length(text) > LIMIT:
            return Answer(403, TOO_LONG)
        with self._lock:
            tweet_id = str(next(self._ids))
        request.note.update(id=tweet_id, text=text, in_reply_to=reply_to)
        return Answer(201, {"data": {"id": tweet_id, "text": text, "edit_history_tweet_ids": [tweet_id]}})

    def me(self, request: Request, match: re.Match[str]) -> Answer:
        if not signed(request):
            return Answer(401, UNAUTHORIZED)
        # X tells the token's permission in every user-context answer; posting needs read-write
        return Answer(200, {"data": dict(ACCOUNT)}, headers={"x-access-level": "read-write"})

    def faults(self) -> Faults:
        reset = str(int(time.time()) + 3)  # X says when the window resets, not how long to wait
        return Faults(
            "twitter.tweet",
            Answer(429, {"title": "Too Many Requests", "status": 429}, headers={"x-rate-limit-reset": reset}),
            Answer(503, {"title": "Service Unavailable", "status": 503}),
            Answer(401, {"title": "Unauthorized", "status": 401, "detail": "Unauthorized"}),
        )

    def channel_config(self, name: str) -> dict[str, Any]:
        return {
            "type": "twitter",
            "consumer_key": CONSUMER_KEY,
            "consumer_secret": CONSUMER_SECRET,
            "access_token": ACCESS_TOKEN,
            "access_token_secret": ACCESS_TOKEN_SECRET,
            "api_base_url": self.sandbox.http.url,
        }


def signed(request: Request) -> bool:
    """Whether ``Authorization: OAuth ...`` holds a valid HMAC-SHA1 signature by the sandbox's keys."""
    header = request.header("authorization") or ""
    if not header.startswith("OAuth "):
        return False
    try:
        oauth = dict(utils.parse_authorization_header(header))
    except ValueError:
        return False
    if oauth.get("oauth_consumer_key") != CONSUMER_KEY or oauth.get("oauth_token") != ACCESS_TOKEN:
        return False
    query = urlencode(request.params)
    # a JSON body is not signed in OAuth 1.0a; the query and the oauth_* parameters are
    params = signature.collect_parameters(uri_query=query, headers={"Authorization": header})
    base = SimpleNamespace(
        http_method=request.method,
        uri=X_API + request.path + (f"?{query}" if query else ""),
        params=params,
        signature=utils.unescape(oauth.get("oauth_signature", "")),
    )
    return bool(signature.verify_hmac_sha1(base, CONSUMER_SECRET, ACCESS_TOKEN_SECRET))
