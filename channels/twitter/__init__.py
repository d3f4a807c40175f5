"""X (Twitter) through the X API v2 ``POST /2/tweets`` with OAuth 1.0a user context, by tweepy.

A rendered update becomes one tweet (``long_updates = "truncate"``) or a numbered thread
(``long_updates = "thread"``), measured with X's weighted length (twitter-text v3):

- ``Message.parts["text"]``: the first (or only) tweet; a thread adds ``"reply 2"``, ``"reply 3"``... for preview.
- ``Message.data["tweets"]``: every tweet in posting order; ``send`` posts these.
- ``Message.size``: ``weighted_length`` (of the longest tweet), ``limit``, ``tweets`` (and ``full_length``).
- ``Message.warnings``: ``"truncated"`` and/or ``"thread of N"``.

``SendContext.state["tweet_ids"]`` lists the ids posted so far, so a retried thread resumes after its last posted
part. The provider id is the first tweet's id.
"""

from __future__ import annotations

import time
import unicodedata
from functools import cached_property
from typing import Any, ClassVar, Literal

import requests
import tweepy
from pydantic import SecretStr, field_validator
from requests.adapters import HTTPAdapter
from requests.utils import get_environ_proxies

from broadcaster.core.errors import DeliveryError, PermanentError, RateLimited, TransientError
from channels.base import Channel, HttpChannelConfig, Message, SendContext, SendResult, public_url
from channels.twitter.text import LIMIT, fit, weighted_length

#: the host tweepy writes into every request; no tweepy setting changes it
X_API = "https://api.twitter.com"


class TwitterConfig(HttpChannelConfig):
    consumer_key: SecretStr
    consumer_secret: SecretStr
    access_token: SecretStr
    access_token_secret: SecretStr
    api_base_url: str = X_API
    long_updates: Literal["truncate", "thread"] = "truncate"

    @field_validator("api_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


class _XTransport(HTTPAdapter):
    """Sends tweepy's requests to ``api_base_url`` instead of X's own host, each with a timeout.

    tweepy signs the request for ``https://api.twitter.com`` before it gets here, as a forwarding proxy expects.
    """

    def __init__(self, base_url: str, timeout: tuple[float, float]) -> None:
        super().__init__(max_retries=0)  # retries belong to the delivery's policy
        self.base_url = base_url
        self.timeout = timeout

    def send(
        self,
        request: Any,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        if request.url.startswith(X_API + "/") and self.base_url != X_API:
            request.url = self.base_url + request.url[len(X_API) :]
            # requests chose proxies for api.twitter.com; NO_PROXY must be judged for where it really goes
            proxies = get_environ_proxies(request.url)
        timeout = timeout or self.timeout
        return super().send(request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies)


class TwitterChannel(Channel[TwitterConfig]):
    """Posts to the account the access token belongs to; one delivery per update."""

    type: ClassVar[str] = "twitter"
    Config = TwitterConfig
    templates: ClassVar[dict[str, str]] = {"text": "tweet.txt"}
    emulator = "channels.twitter.emulator:XEmulator"
    max_weighted_length: ClassVar[int] = LIMIT
    #: longer updates are cut in the last tweet of a thread: a long thread helps nobody during an outage
    max_thread: ClassVar[int] = 10

    @cached_property
    def client(self) -> tweepy.Client:
        config = self.config
        client = tweepy.Client(
            consumer_key=config.consumer_key.get_secret_value(),
            consumer_secret=config.consumer_secret.get_secret_value(),
            access_token=config.access_token.get_secret_value(),
            access_token_secret=config.access_token_secret.get_secret_value(),
            wait_on_rate_limit=False,  # it sleeps and retries by recursion; the delivery's retry policy decides
        )
        seconds = config.timeout.total_seconds()
        transport = _XTransport(config.api_base_url, (seconds, seconds))
        client.session.mount(X_API + "/", transport)
        client.session.mount(config.api_base_url + "/", transport)
        return client

    def close(self) -> None:
        if "client" in self.__dict__:
            self.client.session.close()

    def shape(self, parts: dict[str, str], context: dict[str, Any]) -> Message:
        text = unicodedata.normalize("NFC", parts["text"].strip())
        link = (context.get("incident") or {}).get("url")
        tweets, truncated = fit(text, link, self.config.long_updates, self.max_thread)
        message = Message(parts={"text": tweets[0]})
        message.parts.update({f"reply {n}": tweet for n, tweet in enumerate(tweets[1:], 2)})
        message.data = {"tweets": tweets}
        message.size = {
            "weighted_length": max(weighted_length(t) for t in tweets),
            "limit": self.max_weighted_length,
            "tweets": len(tweets),
        }
        if truncated or len(tweets) > 1:
            message.size["full_length"] = weighted_length(text)
        message.warnings = (["truncated"] if truncated else []) + (
            [f"thread of {len(tweets)}"] if len(tweets) > 1 else []
        )
        return message

    def send(self, message: Message, target: str, context: SendContext) -> SendResult:
        tweets: list[str] = message.data.get("tweets") or [message.parts["text"]]
        posted: list[str | None] = list(context.state.get("tweet_ids", []))
        notes: list[str] = []
        for number in range(len(posted) + 1, len(tweets) + 1):
            reply_to = next((i for i in reversed(posted) if i), None)
            tweet_id = self._post(tweets[number - 1], reply_to)
            posted.append(tweet_id)
            # kept at once: when a later part fails, the retry starts after this one
            context.state["tweet_ids"] = list(posted)
            if tweet_id is None:
                which = "this tweet" if len(tweets) == 1 else f"part {number}"
                # on a first attempt the same text came from an earlier update, which followers have seen
                why = "an earlier attempt got through" if context.attempt > 1 else "an earlier update said the same"
                notes.append(f"X already has {which} (duplicate content): {why}")
        if len(tweets) > 1:
            notes.append(f"thread of {len(tweets)}: " + ", ".join(i or "?" for i in posted))
        return SendResult(provider_id=posted[0], note="; ".join(notes) or None)

    def check(self) -> str:
        """``GET /2/users/me``: the keys are valid, and the token may post (X's ``x-access-level``)."""
        levels: list[str] = []

        def keep_level(response: requests.Response, *args: Any, **kwargs: Any) -> None:
            levels.append(response.headers.get("x-access-level", ""))

        hooks = self.client.session.hooks["response"]
        hooks.append(keep_level)
        try:
            response = self.client.get_me(user_auth=True)
        except (tweepy.TweepyException, requests.RequestException) as exc:
            raise self._error(exc) from exc
        finally:
            hooks.remove(keep_level)
        username = getattr(response.data, "username", None)
        if not username:
            raise TransientError("X answered GET /2/users/me without the account")
        if levels and levels[-1] == "read":
            raise PermanentError(
                f"@{username}'s access token can only read: give the X app Read and Write permission, "
                "then regenerate the access token and secret"
            )
        return f"authenticated as @{username}"

    def _post(self, text: str, reply_to: str | None) -> str | None:
        """Post one tweet; its id, or None when X already has this text from us."""
        try:
            response = self.client.create_tweet(text=text, in_reply_to_tweet_id=reply_to)
        except tweepy.Forbidden as exc:
            if any("duplicate content" in str(m).lower() for m in exc.api_messages):
                return None
            raise self._error(exc) from exc
        except (tweepy.TweepyException, requests.RequestException) as exc:
            raise self._error(exc) from exc
        try:
            return str(response.data["id"])
        except (KeyError, TypeError):
            raise TransientError("X answered without the new tweet's id") from None

    def _error(self, exc: Exception) -> DeliveryError:
        """One of our errors for a tweepy or requests exception; its text holds none of the credentials."""
        where = public_url(self.config.api_base_url)  # without any credentials it carries
        if isinstance(exc, tweepy.HTTPException):
            status = exc.response.status_code
            said = "; ".join(" ".join(str(m).split()) for m in exc.api_messages) or exc.response.reason
            reason = self._scrub(f"X answered HTTP {status}: {said}")
            if isinstance(exc, tweepy.TooManyRequests):
                reset = getattr(exc, "reset_time", None)
                return RateLimited(reason, retry_after=max(0.0, reset - time.time()) if reset else None)
            if status >= 500 or status in (408, 425):
                return TransientError(reason)
            return PermanentError(reason)
        if isinstance(exc, requests.Timeout):
            return TransientError(f"no answer from {where} within {self.config.timeout.total_seconds():g}s")
        if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema)):
            return PermanentError(f"cannot use {where}: {type(exc).__name__}")
        if isinstance(exc, requests.RequestException):
            return TransientError(f"cannot reach {where}: {type(exc).__name__}")
        return TransientError(f"tweepy failed: {type(exc).__name__}")

    def _scrub(self, text: str) -> str:
        config = self.config
        for secret in (config.consumer_key, config.consumer_secret, config.access_token, config.access_token_secret):
            if len(secret.get_secret_value()) >= 4:
                text = text.replace(secret.get_secret_value(), "***")
        return text
