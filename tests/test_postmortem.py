"""Post-mortems: the whole report on the blog webhook, a pointer with its link everywhere else; resolved only."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from standardwebhooks.webhooks import Webhook

from broadcaster.sandbox import Sandbox
from broadcaster.testing import Result
from channels.webhook.emulator import SECRET

REPORT = """# Checkout outage of 1 May: post-mortem

A bad deploy broke payment authorisation for **42 minutes**; about 3% of
checkouts failed.

## Timeline

| time  | what                  |
|-------|-----------------------|
| 14:02 | deploy                |
| 14:44 | rolled back           |

## What we change

- Canary deploys for the payment service
- An alert on authorisation errors <within 2 minutes>
"""


def channels(sandbox: Sandbox) -> dict[str, dict]:
    """The blog, and three customer channels that get the pointer."""
    return {
        "blog": sandbox.channel_config("webhook", "blog"),
        "slack": sandbox.channel_config("slack", "slack"),
        "x": sandbox.channel_config("twitter", "x"),
        "sms": sandbox.channel_config("sms", "sms"),
    }


def open_incident(cli: Callable[..., Result], config: tuple[str, ...], status: str) -> str:
    opened = cli("send", *config, "--channel", "blog", "--title", "Checkout is failing", "--status", status,
                 "--message", "Payments fail.", "--json")  # fmt: skip
    assert opened.code == 0, opened.stderr
    return str(opened.json["incident_id"])


def test_a_post_mortem_needs_a_resolved_incident(
    cli: Callable[..., Result], embedded_config: Callable[..., Path], sandbox: Sandbox, tmp_path: Path
) -> None:
    """Not resolved: exit 2 with a one-line error that says why; nothing is sent."""
    config = ("--config", str(embedded_config(channels=channels(sandbox))))
    incident = open_incident(cli, config, "monitoring")
    report = tmp_path / "report.md"
    report.write_text(REPORT)
    sent = len(sandbox.http.received())

    refused = cli("postmortem", incident, "--file", str(report), *config)
    assert refused.code == 2
    assert refused.stderr.strip() == (
        f"broadcaster: error: incident {incident} is monitoring, not resolved: publish its post-mortem once it is "
        "resolved (send --incident ID --status resolved)"
    )
    missing = cli("postmortem", incident, "--file", str(tmp_path / "nope.md"), *config)
    assert missing.code == 2 and "nope.md: cannot read" in missing.stderr
    endless = cli("postmortem", incident, "--file", "/dev/zero", *config, timeout=30)
    assert endless.code == 2
    assert endless.stderr.strip() == "broadcaster: error: /dev/zero: larger than a report may be (200,000 characters)"
    assert len(sandbox.http.received()) == sent


def test_the_blog_gets_the_report_and_the_other_channels_a_pointer(
    cli: Callable[..., Result], embedded_config: Callable[..., Path], sandbox: Sandbox, tmp_path: Path
) -> None:
    """Markdown and HTML in full on the (signed) blog webhook; the title, summary and link elsewhere; the same
    report is published once, a changed one as a revision."""
    config = ("--config", str(embedded_config(channels=channels(sandbox))))
    incident = open_incident(cli, config, "resolved")
    report = tmp_path / "report.md"
    report.write_text(REPORT)

    published = cli("postmortem", incident, "--file", str(report), *config, "--json")
    assert published.code == 0, published.stderr
    summary = published.json
    link = f"https://status.example.com/incidents/{incident}/postmortem"
    assert summary["url"] == link and summary["revision"] == 1
    assert summary["event"] == "incident.postmortem" and summary["status"] == "delivered"
    assert {d["channel"] for d in summary["deliveries"]} == {"blog", "slack", "x", "sms"}

    hook = sandbox.http.received("webhook")[-1]
    Webhook(SECRET).verify(hook.body, hook.headers)
    assert hook.header("X-Broadcaster-Event") == "incident.postmortem"
    rendered = hook.json["rendered"]
    assert rendered["title"] == "Checkout outage of 1 May: post-mortem"
    assert rendered["markdown"].startswith(REPORT.strip())
    html = rendered["html"]
    assert "<h1>Checkout outage of 1 May: post-mortem</h1>" in html and "<strong>42 minutes</strong>" in html
    assert "<table>" in html and "<li>Canary deploys for the payment service</li>" in html
    assert "&lt;within 2 minutes&gt;" in html  # raw HTML in the report is shown, never interpreted

    (post,) = [r.json for r in sandbox.http.received("slack.post")]
    assert "A bad deploy broke payment authorisation for 42 minutes; about 3% of checkouts failed." in post["text"]
    assert link in post["text"] and "Canary" not in post["text"]
    (tweet,) = [r.json["text"] for r in sandbox.http.received("twitter.tweet")]
    assert tweet == f"Post-mortem: Checkout is failing\n{link}"
    texts = {r.form["Body"][0] for r in sandbox.http.received("twilio.message")}
    assert texts == {f"Post-mortem: Checkout is failing\n{link}"}

    again = cli("postmortem", incident, "--file", str(report), *config)
    assert again.code == 2 and "already published" in again.stderr
    report.write_text(REPORT + "\n## Update\n\nThe canary is live.\n")
    revised = cli("postmortem", incident, "--file", str(report), *config, "--channel", "blog", "--json")
    assert revised.code == 0, revised.stderr
    assert revised.json["revision"] == 2
    assert sandbox.http.received("webhook")[-1].json["rendered"]["title"].endswith("(revised)")

    events = cli("incident", incident, *config, "--json").json["events"]
    assert [e["event"] for e in events] == ["incident.postmortem", "incident.postmortem"]
