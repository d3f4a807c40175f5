"""``broadcaster demo``: a whole broadcast against the sandbox, with a flaky channel and a rejected recipient."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from broadcaster import service
from broadcaster.delivery.queue import use_settings
from broadcaster.domain.broadcasts import parse_request
from broadcaster.interfaces.cli.options import SCOPE, ConfigOption, JsonOption, settings_from
from broadcaster.interfaces.cli.output import deliveries_table, out, print_json, watch
from broadcaster.sandbox import Sandbox
from broadcaster.settings import RetrySettings, Settings
from broadcaster.store.queries import broadcast_summary
from channels import channel_types

REQUESTS_FILE = Path("broadcaster-demo-requests.json")

commands = typer.Typer()


@commands.command()
def demo(
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run a whole broadcast against local provider emulators: no account, no network, no Redis."""
    raise typer.Exit(run_demo(settings_from(config), out, as_json))


def demo_settings(settings: Settings, sandbox: Sandbox) -> Settings:
    """The user's database and links, a channel of every type that has an emulator pointed at the sandbox (named
    as its emulator says), embedded, fast retries."""
    channels = {}
    for kind, emulator in sorted(sandbox.emulators.items()):
        name = emulator.demo_name or kind
        channels[name] = channel_types()[kind].Config.model_validate(sandbox.channel_config(kind, name))
    return settings.model_copy(
        update={
            "broker_url": "",
            "channels": channels,
            "retry": RetrySettings(
                max_attempts=4, backoff=timedelta(milliseconds=300), backoff_max=timedelta(seconds=2)
            ),
        }
    )


def script_faults(sandbox: Sandbox) -> list[str]:
    """Make the demo show retries and permanent failures; return what a viewer should expect."""
    return [line for emulator in sandbox.emulators.values() for line in emulator.script_demo()]


def run_demo(settings: Settings, console: Console, as_json: bool) -> int:
    """Broadcast one scripted update through the sandbox; 0 once every delivery has finished, else 3."""
    with Sandbox() as sandbox:
        settings = use_settings(demo_settings(settings, sandbox))
        expected = script_faults(sandbox)
        if not as_json:
            console.print(f"[bold]Sandbox[/] on {sandbox.http.url} (HTTP) and 127.0.0.1:{sandbox.smtp.port} (SMTP)")
            names = ", ".join(f"{n} ({c.type})" for n, c in settings.channels.items())
            console.print(f"Channels: {names}", markup=False)
            for line in expected:
                console.print(f"  scripted: {line}", markup=False)
        request = parse_request(
            {
                "title": "Elevated API error rates",
                "status": "investigating",
                "impact": "major",
                "components": ["API", "Dashboard"],
                "message": "We are seeing elevated error rates on the API and are investigating. "
                "Dashboard logins may fail intermittently.",
            }
        )
        broadcast_id = service.submit(settings, request, scope=SCOPE).body["broadcast_id"]
        watch(settings, broadcast_id, timeout=120, live=not as_json)
        summary = broadcast_summary(settings, broadcast_id)
        requests = [_recorded(r) for r in sandbox.http.received()] + [
            {"endpoint": "smtp", "from": m.sender, "to": m.recipients, "subject": m.message["subject"]}
            for m in sandbox.smtp.received()
        ]
    REQUESTS_FILE.write_text(json.dumps(requests, indent=2) + "\n")
    if as_json:
        print_json(summary)
    else:
        deliveries_table(summary["deliveries"], title=f"broadcast {broadcast_id}: {summary['status']}")
        console.print(f"\nThe sandbox recorded {len(requests)} requests: {REQUESTS_FILE}", markup=False)
        console.print("Look next:")
        console.print(f"  broadcaster deliveries --broadcast {broadcast_id}")
        console.print("  broadcaster deliveries --status failed")
        console.print(f"  broadcaster retry --broadcast {broadcast_id}")
    unfinished = [d for d in summary["deliveries"] if d["status"] not in ("delivered", "failed")]
    return 0 if not unfinished else 3


def _recorded(request: Any) -> dict[str, Any]:
    return {
        "endpoint": request.endpoint,
        "method": request.method,
        "path": request.path,
        "status": request.status,
        "scripted": request.scripted,
        "body": request.body.decode(errors="replace")[:2000],
    }
