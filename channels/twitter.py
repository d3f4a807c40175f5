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

import re
import time
import unicodedata
from functools import cached_property
from typing import Any, ClassVar, Literal

import requests
import tweepy
from pydantic import SecretStr, field_validator
from requests.adapters import HTTPAdapter
from requests.utils import get_environ_proxies

from broadcaster.errors import DeliveryError, PermanentError, RateLimited, TransientError
from channels.base import Channel, HttpChannelConfig, Message, SendContext, SendResult, public_url
from channels.fitting import keep_link, prefix_end, shorten, truncate

#: the host tweepy writes into every request; no tweepy setting changes it
X_API = "https://api.twitter.com"
LIMIT = 280
URL_LENGTH = 23

# --- X's weighted length (twitter-text v3 configuration) ----------------------------------------------------

#: code points that weigh 2: all but U+0000-U+10FF, U+2000-U+200D, U+2010-U+201F and U+2032-U+2037
_HEAVY = re.compile("[^\u0000-\u10ff\u2000-\u200d\u2010-\u201f\u2032-\u2037]")
#: emoji bases (close to Unicode's Extended_Pictographic); a whole emoji sequence weighs 2
_PICT = (
    "\u00a9\u00ae\u203c\u2049\u2122\u2139\u2194-\u2199\u21a9\u21aa\u231a\u231b\u2328\u23cf\u23e9-\u23f3"
    "\u23f8-\u23fa\u24c2\u25aa\u25ab\u25b6\u25c0\u25fb-\u25fe\u2600-\u27bf\u2934\u2935\u2b05-\u2b07"
    "\u2b1b\u2b1c\u2b50\u2b55\u3030\u303d\u3297\u3299\U0001f000-\U0001faff"
)
_MODIFIER = "(?:\ufe0f|[\U0001f3fb-\U0001f3ff])"
_EMOJI = (
    r"[\U0001f1e6-\U0001f1ff]{2}"  # a flag: two regional indicators
    r"|[0-9#*]\ufe0f?\u20e3"  # a keycap
    rf"|[{_PICT}]{_MODIFIER}*[\U000e0020-\U000e007f]*(?:\u200d[{_PICT}]{_MODIFIER}*)*"
)
#: letters that may stand in a link's path besides ASCII (twitter-text: Latin accents, Cyrillic)
_ACCENTS = (
    "\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u0253\u0254\u0256\u0257\u0259\u025b\u0263\u0268\u026f"
    "\u0272\u0289\u028b\u02bb\u0300-\u036f\u0400-\u04ff\u1e00-\u1eff"
)
_PATH_CHAR = rf"[a-z0-9!*';:=+,.$/%#\[\]\-\u2013_~@|&{_ACCENTS}]"
_PATH_END = rf"[a-z0-9+\-=_#/{_ACCENTS}]"
_TAIL = (
    r"(?::\d+)?"
    rf"(?:/(?:(?:{_PATH_CHAR}|\({_PATH_CHAR}+\))*(?:{_PATH_END}|\({_PATH_CHAR}+\)))?)?"
    r"(?:\?[a-z0-9!?*'@();:&=+$/%#\[\]\-_.,~|]*[a-z0-9\-_&=#/])?"
)
_TLD = r"(?P<tld>[a-z]{2,}|xn--[a-z0-9-]+)(?![a-z0-9@+-])"
_TOKENS = re.compile(
    rf"(?P<url>(?<![a-z0-9@$#＠＃])https?://(?:[^\W_](?:[\w-]*[^\W_])?\.)+{_TLD}{_TAIL})"
    rf"|(?P<bare>(?<![a-z0-9@$#_./-])(?:[a-z0-9](?:[a-z0-9_-]*[a-z0-9])?\.)+"
    rf"(?P<btld>[a-z]{{2,}})(?![a-z0-9@+-]){_TAIL})"
    rf"|(?P<emoji>{_EMOJI})",
    re.IGNORECASE,
)
#: reserved and private top-level domains that X does not link, so it counts them character by character
_UNLINKED = {"test", "local", "localhost", "internal", "invalid", "example", "lan", "home", "corp", "intranet"}


def _plain(text: str) -> int:
    return len(text) + len(_HEAVY.findall(text))


def weighted_length(text: str) -> int:
    """X's count of ``text``: a link weighs 23, an emoji sequence 2, CJK and most symbols 2, Latin 1.

    A link without ``http(s)://`` (``status.example.com``) weighs 23 to X only when its top-level domain is one
    X knows (``Node.js`` is no link); it is counted here as the larger of 23 and its own length: X may count
    such a word as less, never as more.
    """
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n")
    total, position = 0, 0
    for match in _TOKENS.finditer(text):
        total += _plain(text[position : match.start()])
        token = match.group()
        if match.group("url"):
            total += _plain(token) if match.group("tld").lower() in _UNLINKED else URL_LENGTH
        elif match.group("bare"):
            total += _plain(token) if match.group("btld").lower() in _UNLINKED else max(URL_LENGTH, _plain(token))
        else:
            total += 2
        position = match.end()
    return total + _plain(text[position:])


# --- fitting a rendering into tweets --------------------------------------------------------------------


def _sentence_end(text: str, end: int) -> int:
    """A thread part reads better ending with a sentence or a line, when one ends in its second half."""
    ends = [m.end() for m in re.finditer(r"[.!?…](?=\s)|(?=\n)", text[: end + 1]) if end // 2 <= m.end() <= end]
    return max(ends, default=end)


def fit(text: str, link: str | None, mode: str, max_tweets: int) -> tuple[list[str], bool]:
    """Tweets that each weigh at most 280 and keep ``link``; and whether text had to be dropped."""
    if weighted_length(text) <= LIMIT:
        return [text], False
    if mode == "truncate":
        tweet, truncated = shorten(text, link, LIMIT, weighted_length)
        tweets = [tweet]
    else:
        head, kept = keep_link(text, link, LIMIT, weighted_length)
        if weighted_length(head + kept) <= LIMIT:  # only blank lines before the link were too many
            return [head + kept], False
        tweets, truncated = _thread(head, kept, max_tweets)
    if any(weighted_length(tweet) > LIMIT for tweet in tweets):  # a safety net; the tests show it never fires
        return [truncate(text, LIMIT, weighted_length)], True
    return tweets, truncated


def _thread(head: str, kept: str, max_tweets: int) -> tuple[list[str], bool]:
    """``head`` in numbered parts on word boundaries, ``kept`` (the link) closing the first one."""
    for digits in range(1, 4):
        numbering = len(f" ({'9' * digits}/{'9' * digits})")
        chunks: list[str] = []
        rest, truncated = head, False
        while rest:
            budget = LIMIT - numbering - (weighted_length(kept) if not chunks else 0)
            end = prefix_end(rest, budget, weighted_length)
            if end == len(rest):
                chunks.append(rest)
                break
            if len(chunks) + 1 == max_tweets:
                chunks.append(truncate(rest, budget, weighted_length))
                truncated = True
                break
            end = _sentence_end(rest, max(1, end))
            chunks.append(rest[:end].rstrip())
            rest = rest[end:].strip()
        if len(str(len(chunks))) <= digits:
            break
    tweets = [f"{chunk} ({n}/{len(chunks)})" for n, chunk in enumerate(chunks, 1)]
    tweets[0] += kept
    return tweets, truncated


# --- the channel -----------------------------------------------------------------------------------------


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
