"""The twitter channel through the real tweepy SDK, against the sandbox's X API emulator."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from broadcaster.core.errors import PermanentError, RateLimited, TransientError
from broadcaster.rendering import render
from broadcaster.sandbox import Answer, Sandbox
from broadcaster.sandbox.smtp import free_port
from channels import Message, SendContext, channel_types
from channels.twitter import TwitterChannel, TwitterConfig
from channels.twitter.emulator import (
    ACCESS_TOKEN,
    ACCESS_TOKEN_SECRET,
    ACCOUNT,
    CONSUMER_KEY,
    CONSUMER_SECRET,
    DUPLICATE,
    problem,
)
from channels.twitter.text import weighted_length

LINK = "https://status.example.com/incidents/01J0B6N4E4X6QK5Z7Y8W9V0T1S"
SECRETS = (CONSUMER_KEY, CONSUMER_SECRET, ACCESS_TOKEN, ACCESS_TOKEN_SECRET)
LONG_MESSAGE = (
    "We are seeing elevated error rates on the public API in the eu-west region since 09:12 UTC. "
    "Dashboard logins may fail intermittently and webhooks to customers are delayed by up to ten minutes. "
    "Engineers have rolled back this morning's deploy of the authentication service and are watching recovery. "
    "Card payments are not affected. Scheduled exports will run once the backlog has drained. "
    "We will post another update within thirty minutes, or sooner if anything changes."
)


def incident_context(
    message: str = "We are investigating elevated error rates on the API.",
    status: str = "investigating",
    title: str = "Elevated API error rates",
) -> dict[str, Any]:
    """What ``broadcaster.domain.broadcasts.render_all`` gives the templates."""
    update = {"id": "01J0B6N4E5UPDATE", "status": status, "message": message, "created_at": "2024-06-01T09:20:00+00:00"}
    return {
        "event": "incident.update",
        "incident": {
            "id": "01J0B6N4E4X6QK5Z7Y8W9V0T1S",
            "title": title,
            "status": status,
            "impact": "major",
            "components": ["API"],
            "created_at": "2024-06-01T09:15:00+00:00",
            "url": LINK,
        },
        "update": update,
        "timeline": [update],
        "public_url": "https://status.example.com",
        "fallback": None,
    }


@pytest.fixture
def make_channel(sandbox: Sandbox) -> Iterator[Callable[..., TwitterChannel]]:
    """A twitter channel pointed at the sandbox, with some keys of its table replaced."""
    made: list[TwitterChannel] = []

    def make(**overrides: Any) -> TwitterChannel:
        assert channel_types()["twitter"] is TwitterChannel
        channel = TwitterChannel(
            "twitter", TwitterConfig.model_validate({**sandbox.channel_config("twitter"), **overrides})
        )
        made.append(channel)
        return channel

    yield make
    for channel in made:
        channel.close()


def send(channel: TwitterChannel, message: Message, state: dict[str, Any] | None = None, attempt: int = 1) -> Any:
    """One attempt; like the pipeline, keep what the channel left in ``context.state`` even when it raises."""
    state = {} if state is None else state
    context = SendContext(delivery_id="01J0DELIVERY", attempt=attempt, state=state)
    try:
        return channel.send(message, channel.targets()[0], context)
    finally:
        state.update(context.state)


def assert_no_secret(error: BaseException) -> None:
    for secret in SECRETS:
        assert secret not in str(error)


# --- success ---------------------------------------------------------------------------------------------


def test_posts_one_signed_tweet_and_returns_its_id(
    sandbox: Sandbox, make_channel: Callable[..., TwitterChannel]
) -> None:
    """X receives POST /2/tweets with an OAuth 1.0a header and the rendered text; the tweet id is the provider id."""
    channel = make_channel()
    message = render(channel, "investigating", incident_context())
    state: dict[str, Any] = {}

    result = send(channel, message, state)

    [request] = sandbox.http.received("twitter.tweet")
    assert (request.method, request.path, request.status) == ("POST", "/2/tweets", 201)
    authorization = request.header("authorization") or ""
    assert authorization.startswith("OAuth ") and f'oauth_consumer_key="{CONSUMER_KEY}"' in authorization
    assert request.json == {"text": message.parts["text"]}
    assert message.parts["text"] == (
        f"Investigating: Elevated API error rates\nWe are investigating elevated error rates on the API.\n{LINK}"
    )
    assert result.provider_id == request.note["id"] and result.provider_id.isdigit()
    assert state["tweet_ids"] == [result.provider_id]
    assert message.size == {"weighted_length": weighted_length(message.parts["text"]), "limit": 280, "tweets": 1}
    assert message.warnings == []


def test_the_resolved_update_reads_resolved(make_channel: Callable[..., TwitterChannel]) -> None:
    message = render(make_channel(), "resolved", incident_context("Error rates are back to normal.", status="resolved"))
    assert message.parts["text"].startswith("Resolved: Elevated API error rates\nError rates are back to normal.")


def test_a_retry_after_success_posts_nothing_again(
    sandbox: Sandbox, make_channel: Callable[..., TwitterChannel]
) -> None:
    """The ids in the delivery's state say the tweet is out: a repeated attempt only reports it."""
    channel = make_channel()
    message = render(channel, "investigating", incident_context())
    state: dict[str, Any] = {}
    first = send(channel, message, state)
    again = send(channel, message, state)
    assert again.provider_id == first.provider_id
    assert len(sandbox.http.received("twitter.tweet")) == 1


def test_check_names_the_account_without_posting(sandbox: Sandbox, make_channel: Callable[..., TwitterChannel]) -> None:
    assert make_channel().check() == "authenticated as @examplestatus"
    [request] = sandbox.http.received()
    assert (request.endpoint, request.method, request.path, request.status) == ("twitter.me", "GET", "/2/users/me", 200)
    assert (request.header("authorization") or "").startswith("OAuth ")


def test_a_proxy_for_x_does_not_capture_a_base_url_in_no_proxy(
    sandbox: Sandbox, make_channel: Callable[..., TwitterChannel], monkeypatch: pytest.MonkeyPatch
) -> None:
    """requests picks proxies for api.twitter.com; the request really goes to the sandbox, which NO_PROXY names."""
    closed = f"http://127.0.0.1:{free_port()}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, closed)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    assert make_channel().check() == "authenticated as @examplestatus"


# --- errors ----------------------------------------------------------------------------------------------


def test_429_is_rate_limited_until_the_reset(sandbox: Sandbox, make_channel: Callable[..., TwitterChannel]) -> None:
    reset = int(time.time()) + 120
    limits = {"x-rate-limit-limit": "200", "x-rate-limit-remaining": "0", "x-rate-limit-reset": str(reset)}
    sandbox.http.script("twitter.tweet", Answer(429, problem(429, "Too Many Requests", "Too Many Requests"), limits))
    channel = make_channel()
    with pytest.raises(RateLimited) as caught:
        send(channel, render(channel, "investigating", incident_context()))
    assert caught.value.retry_after is not None and 115 <= caught.value.retry_after <= 121
    assert "429" in str(caught.value)
    assert_no_secret(caught.value)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_transient(
    sandbox: Sandbox, make_channel: Callable[..., TwitterChannel], status: int
) -> None:
    sandbox.http.script("twitter.tweet", Answer(status, problem(status, "Service Unavailable", "Service Unavailable")))
    channel = make_channel()
    with pytest.raises(TransientError) as caught:
        send(channel, render(channel, "investigating", incident_context()))
    assert not isinstance(caught.value, RateLimited)
    assert f"HTTP {status}" in str(caught.value)
    assert_no_secret(caught.value)


@pytest.mark.parametrize(
    "answer",
    [Answer(hang=True), Answer(201, {"data": {"id": "1", "text": "late"}}, delay=3.0), Answer(close=True)],
    ids=["hang", "slow", "closed"],
)
def test_no_timely_answer_is_transient_and_fast(
    sandbox: Sandbox, make_channel: Callable[..., TwitterChannel], answer: Answer
) -> None:
    sandbox.http.script("twitter.tweet", answer)
    channel = make_channel(timeout="1s")
    message = render(channel, "investigating", incident_context())
    started = time.monotonic()
    with pytest.raises(TransientError) as caught:
        send(channel, message)
    assert time.monotonic() - started < 2.5
    assert_no_secret(caught.value)


def test_a_refused_connection_is_transient(make_channel: Callable[..., TwitterChannel]) -> None:
    channel = make_channel(api_base_url=f"http://127.0.0.1:{free_port()}", timeout="1s")
    with pytest.raises(TransientError, match="cannot reach"):
        send(channel, render(channel, "investigating", incident_context()))


def test_wrong_credentials_are_permanent(sandbox: Sandbox, make_channel: Callable[..., TwitterChannel]) -> None:
    """The emulator checks the OAuth signature like X: a wrong secret gets 401, and the error never shows it."""
    channel = make_channel(consumer_secret="not-the-sandbox-secret")
    with pytest.raises(PermanentError, match="401") as caught:
        send(channel, render(channel, "investigating", incident_context()))
    assert "not-the-sandbox-secret" not in str(caught.value)
    assert_no_secret(caught.value)
    with pytest.raises(PermanentError, match="401"):
        channel.check()
    assert [r.status for r in sandbox.http.received()] == [401, 401]


def test_403_duplicate_content_counts_as_delivered(
    sandbox: Sandbox, make_channel: Callable[..., TwitterChannel]
) -> None:
    """X refuses a text it already has: an earlier attempt got through, so the delivery is done."""
    sandbox.http.script("twitter.tweet", Answer(403, DUPLICATE))
    channel = make_channel()
    result = send(channel, render(channel, "investigating", incident_context()), attempt=2)
    assert result.provider_id is None
    assert result.note == "X already has this tweet (duplicate content): an earlier attempt got through"


def test_a_repeated_update_is_refused_by_x_and_counts_as_delivered(
    sandbox: Sandbox, make_channel: Callable[..., TwitterChannel]
) -> None:
    channel = make_channel()
    message = render(channel, "investigating", incident_context())
    first = send(channel, message)
    second = send(channel, message)
    assert first.provider_id and second.provider_id is None
    assert second.note == "X already has this tweet (duplicate content): an earlier update said the same"
    assert [r.status for r in sandbox.http.received("twitter.tweet")] == [201, 403]


def test_other_403s_are_permanent(sandbox: Sandbox, make_channel: Callable[..., TwitterChannel]) -> None:
    not_permitted = problem(403, "Forbidden", "You are not permitted to perform this action.")
    sandbox.http.script("twitter.tweet", Answer(403, not_permitted))
    channel = make_channel()
    with pytest.raises(PermanentError, match="not permitted"):
        send(channel, render(channel, "investigating", incident_context()))


def test_check_refuses_a_read_only_token(sandbox: Sandbox, make_channel: Callable[..., TwitterChannel]) -> None:
    """A token made before the app had write permission authenticates, yet every tweet would get 403."""
    read_only = Answer(200, {"data": dict(ACCOUNT)}, headers={"x-access-level": "read"})
    sandbox.http.script("twitter.me", read_only)
    with pytest.raises(PermanentError, match="can only read"):
        make_channel().check()


def test_check_maps_errors_the_same_way(sandbox: Sandbox, make_channel: Callable[..., TwitterChannel]) -> None:
    sandbox.http.script("twitter.me", Answer(503))
    with pytest.raises(TransientError, match="503"):
        make_channel().check()


# --- long updates ----------------------------------------------------------------------------------------


# X's weighted length itself: tests/unit/channels/test_twitter.py


def test_a_long_update_is_truncated_on_a_word_keeping_the_link(make_channel: Callable[..., TwitterChannel]) -> None:
    channel = make_channel()
    message = render(channel, "investigating", incident_context(LONG_MESSAGE))
    tweet = message.parts["text"]
    assert weighted_length(tweet) <= 280 < message.size["full_length"]
    assert tweet.endswith(f"…\n{LINK}")
    body = tweet.removesuffix(f"…\n{LINK}")
    assert f"Investigating: Elevated API error rates\n{LONG_MESSAGE}".startswith(body)
    assert LONG_MESSAGE[len(body) - len("Investigating: Elevated API error rates\n")] == " "  # cut between words
    assert message.warnings == ["truncated"]
    assert message.data["tweets"] == [tweet]
    assert message.size["weighted_length"] == weighted_length(tweet) and message.size["tweets"] == 1


def test_cjk_and_emoji_weigh_double_when_truncating(make_channel: Callable[..., TwitterChannel]) -> None:
    channel = make_channel()
    message = render(channel, "investigating", incident_context("🔥 " + "API 障害 が 発生 し て い ます。" * 20))
    tweet = message.parts["text"]
    assert len(tweet) < 280 and weighted_length(tweet) <= 280
    assert tweet.endswith(LINK) and message.warnings == ["truncated"]


def test_a_thread_splits_a_long_update_into_numbered_replies(
    sandbox: Sandbox, make_channel: Callable[..., TwitterChannel]
) -> None:
    channel = make_channel(long_updates="thread")
    message = render(channel, "investigating", incident_context(LONG_MESSAGE))
    tweets = message.data["tweets"]
    count = len(tweets)
    assert count >= 2 and message.warnings == [f"thread of {count}"]
    assert all(weighted_length(t) <= 280 for t in tweets)
    assert tweets[0].endswith(f" (1/{count})\n{LINK}")
    assert [t.removesuffix(f"\n{LINK}").rsplit(" ", 1)[1] for t in tweets] == [
        f"({n}/{count})" for n in range(1, count + 1)
    ]
    words = " ".join(t.removesuffix(f"\n{LINK}").rsplit(" ", 1)[0] for t in tweets).split()
    assert words == f"Investigating: Elevated API error rates {LONG_MESSAGE}".split()  # nothing lost, nothing cut
    assert message.parts == {"text": tweets[0], **{f"reply {n}": t for n, t in enumerate(tweets[1:], 2)}}

    state: dict[str, Any] = {}
    result = send(channel, message, state)

    posted = sandbox.http.received("twitter.tweet")
    assert [r.json["text"] for r in posted] == tweets
    ids = [r.note["id"] for r in posted]
    assert [r.json.get("reply") for r in posted] == [None] + [{"in_reply_to_tweet_id": i} for i in ids[:-1]]
    assert result.provider_id == ids[0]
    assert state["tweet_ids"] == ids


def test_a_very_long_update_makes_at_most_ten_tweets(make_channel: Callable[..., TwitterChannel]) -> None:
    channel = make_channel(long_updates="thread")
    message = render(channel, "identified", incident_context(LONG_MESSAGE * 12, status="identified"))
    tweets = message.data["tweets"]
    assert len(tweets) == TwitterChannel.max_thread == 10
    assert message.warnings == ["truncated", "thread of 10"]
    assert tweets[-1].endswith("… (10/10)") and tweets[0].endswith(f" (1/10)\n{LINK}")
    assert all(weighted_length(t) <= 280 for t in tweets)


def test_a_thread_that_failed_midway_resumes_without_reposting(
    sandbox: Sandbox, make_channel: Callable[..., TwitterChannel]
) -> None:
    """Part 2 meets a 503; the retry, given the state the pipeline kept, posts part 2 onwards, part 1 only once."""
    channel = make_channel(long_updates="thread")
    message = render(channel, "investigating", incident_context(LONG_MESSAGE))
    tweets = message.data["tweets"]
    first_id = "1799999999999999999"
    sandbox.http.script("twitter.tweet", Answer(201, {"data": {"id": first_id, "text": tweets[0]}}), Answer(503))
    state: dict[str, Any] = {}

    with pytest.raises(TransientError, match="503"):
        send(channel, message, state)
    assert state["tweet_ids"] == [first_id]
    result = send(channel, message, state)

    requests = sandbox.http.received("twitter.tweet")
    assert [r.json["text"] for r in requests] == [tweets[0], tweets[1], *tweets[1:]]
    assert [r.status for r in requests] == [201, 503] + [201] * (len(tweets) - 1)
    retried = requests[2:]
    assert retried[0].json["reply"] == {"in_reply_to_tweet_id": first_id}
    assert [r.json["reply"]["in_reply_to_tweet_id"] for r in retried[1:]] == [r.note["id"] for r in retried[:-1]]
    assert result.provider_id == first_id
    assert state["tweet_ids"] == [first_id] + [r.note["id"] for r in retried]


# --- end to end ------------------------------------------------------------------------------------------


def test_send_through_the_cli_tweets_and_reports_the_tweet_id(
    sandbox: Sandbox, cli: Callable[..., Any], embedded_config: Callable[..., Any]
) -> None:
    result = cli(
        "send", "--config", str(embedded_config()), "--title", "Checkout errors", "--status", "investigating",
        "--message", "Some card payments fail at checkout; we are investigating.", "--channel", "twitter", "--json",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    summary = result.json
    [delivery] = summary["deliveries"]
    [request] = sandbox.http.received("twitter.tweet")
    assert summary["status"] == "delivered"
    assert (delivery["channel"], delivery["type"], delivery["status"]) == ("twitter", "twitter", "delivered")
    assert delivery["provider_id"] == request.note["id"] and delivery["attempts"] == 1
    text = request.json["text"]
    assert text.startswith("Investigating: Checkout errors\nSome card payments fail at checkout; we are investigating.")
    assert text.endswith(f"/incidents/{summary['incident_id']}")
