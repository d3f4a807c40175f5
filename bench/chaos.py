"""Chaos run: a fan-out through real workers on a private Redis, with a worker SIGKILLed and Redis flushed.

Prints one JSON line: deliveries sent, lost, duplicated, failed (by reason), and the time to recover,
next to a baseline run on the same machine, emulators and log in the same process run.

    python bench/chaos.py [--recipients 1000] [--database-url postgresql://...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import select

from broadcaster.db import sessions
from broadcaster.models import Delivery
from broadcaster.sandbox import Sandbox
from broadcaster.testing import run_cli, start_redis, start_worker, write_config

CONCURRENCY = 8


def finished(database_url: str, broadcast_id: str) -> list[Delivery] | None:
    with sessions(database_url)() as session:
        rows = list(session.scalars(select(Delivery).where(Delivery.broadcast_id == broadcast_id)))
    return rows if rows and all(r.status in ("delivered", "failed") for r in rows) else None


def wait_finished(database_url: str, broadcast_id: str, limit: float = 300) -> list[Delivery]:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        rows = finished(database_url, broadcast_id)
        if rows is not None:
            return rows
        time.sleep(0.05)
    raise SystemExit(f"broadcast {broadcast_id} did not finish within {limit}s")


def figures(sandbox: Sandbox, rows: list[Delivery], recipients: list[str], since: float) -> dict[str, Any]:
    received = Counter(r for mail in sandbox.smtp.received() if mail.received_at >= since for r in mail.recipients)
    failed = Counter((row.error or "?").split(":")[0] for row in rows if row.status == "failed")
    return {
        "deliveries": len(rows),
        "sent": len(set(received) & set(recipients)),
        "lost": len(set(recipients) - set(received)),
        "duplicated": sum(n - 1 for n in received.values()),
        "failed": dict(failed),
    }


def run(recipients_count: int, database_url: str | None) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="broadcaster-chaos-"))
    redis_url, redis_process = start_redis()
    database_url = database_url or f"sqlite:///{folder / 'chaos.db'}"
    recipients = [f"c{i:05d}@example.com" for i in range(recipients_count)]
    workers: list[Any] = []
    with Sandbox() as sandbox:
        config = write_config(
            folder / "broadcaster.toml",
            {
                "broker_url": f"{redis_url}/0",
                "database_url": database_url,
                "retry": {"max_attempts": 5, "backoff": "200ms", "backoff_max": "2s"},
                "delivery": {"lease": "5s", "sweep_every": "1s"},
                "channels": {"email": {**sandbox.channel_config("email"), "recipients": recipients}},
            },
        )

        def send() -> str:
            result = run_cli("send", "--config", str(config), "--title", "Chaos", "--status", "investigating",
                             "--message", "Chaos drill.", "--json")  # fmt: skip
            if result.code != 0:
                raise SystemExit(result.stderr)
            return str(result.json["broadcast_id"])

        def worker(name: str) -> Any:
            process = start_worker(config, folder / f"{name}.log", concurrency=CONCURRENCY, name=name)
            workers.append(process)
            return process

        try:
            first = worker("w1")
            # Baseline: the same fan-out, nothing broken.
            since = time.time()
            started = time.monotonic()
            baseline_rows = wait_finished(database_url, send())
            baseline_seconds = time.monotonic() - started
            baseline = figures(sandbox, baseline_rows, recipients, since)

            # Kill -9 a worker a fifth of the way in, then start a new one.
            sandbox.smtp.reset()
            since = time.time()
            started = time.monotonic()
            broadcast = send()
            while len(sandbox.smtp.received()) < recipients_count // 5:
                time.sleep(0.01)
            first.kill()
            first.wait()
            killed = time.monotonic()
            worker("w2")
            kill_rows = wait_finished(database_url, broadcast)
            kill = {**figures(sandbox, kill_rows, recipients, since),
                    "seconds": round(time.monotonic() - started, 2),
                    "recovery_seconds": round(time.monotonic() - killed, 2)}  # fmt: skip

            # FLUSHALL a fifth of the way in: the queue and its bindings vanish; the sweeper re-enqueues.
            sandbox.smtp.reset()
            since = time.time()
            started = time.monotonic()
            broadcast = send()
            while len(sandbox.smtp.received()) < recipients_count // 5:
                time.sleep(0.01)
            redis.Redis.from_url(redis_url).flushall()
            flushed = time.monotonic()
            flush_rows = wait_finished(database_url, broadcast)
            flush = {**figures(sandbox, flush_rows, recipients, since),
                     "seconds": round(time.monotonic() - started, 2),
                     "recovery_seconds": round(time.monotonic() - flushed, 2)}  # fmt: skip
        finally:
            for process in workers:
                process.kill()
            redis_process.kill()
    return {
        "recipients": recipients_count,
        "database": database_url.split(":", 1)[0],
        "worker_concurrency": CONCURRENCY,
        "baseline": {**baseline, "seconds": round(baseline_seconds, 2)},
        "kill_worker": {**kill, "time_vs_baseline": round(kill["seconds"] / baseline_seconds, 2)},
        "flush_redis": {**flush, "time_vs_baseline": round(flush["seconds"] / baseline_seconds, 2)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=1000)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    sys.stdout.write(json.dumps(run(args.recipients, args.database_url)) + "\n")


if __name__ == "__main__":
    main()
