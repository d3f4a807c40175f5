"""Fan-out run: one update to thousands of subscribers through real workers, next to the emulators' own capacity.

Against the sandbox with a latency on every request (default 50 ms), real Celery workers (the default pool:
prefork, one process per core) on a private Redis, and the log on PostgreSQL and on SQLite: one update to N
subscribers (half email, half SMS) plus the tweet, the Slack post and the blog webhook. Prints one JSON line
(progress goes to stderr). Per database:

- ``fast``: N subscribers with the default ``[delivery]`` settings: wall time from ``send`` to the last
  delivery, deliveries per second, p50/p99 from enqueue (the row's ``created_at``) to delivered, worker CPU
  seconds per delivery, peak worker memory, and what the emulators received (lost, duplicated);
- ``fast_small``: the same with ``--small`` subscribers, for the memory comparison;
- ``naive``: ``--naive-subscribers`` with ``[delivery] batch_size = 1`` (one Celery task per delivery).

``capacity_per_second`` is the emulators' own capacity, measured in the same run: a plain asyncio client (its own
keep-alive HTTP/1.1 connections, aiosmtplib) in a process of its own sends the same mix 64, 128 and 256 requests
at once; the best level without errors counts. ``ratios`` holds the targets: the fast run at least 0.5 of the
capacity and 5x the naive run, and its peak worker memory within 10 % of the small run's.

    python bench/fanout.py [--subscribers 10000] [--latency 0.05] [--database postgresql|sqlite|both]
                           [--workers 1] [--naive-subscribers 1000] [--small 1000] [--skip-naive]
                           [--skip-capacity] [--delivery KEY=VALUE]... [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import redis
from sqlalchemy import func, select

from broadcaster.domain.subscriber_import import import_subscribers
from broadcaster.domain.subscribers import normalise_phone
from broadcaster.sandbox import Sandbox
from broadcaster.settings import DeliverySettings, load_settings
from broadcaster.store.db import dispose_all, sessions
from broadcaster.store.models import Attempt, Delivery
from broadcaster.testing import run_cli, start_redis, write_config
from channels.sms.emulator import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER

POSTGRES_URL = os.environ.get("BROADCASTER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
API_URL = "https://status-api.example.com"
SIGNING_KEY = "fanout-bench-signing-key-0123456789abcdef"
#: the capacity client's concurrency levels
CAPACITY_CONCURRENCY = (64, 128, 256)
CLK_TCK = os.sysconf("SC_CLK_TCK")
BODY = "Checkout is failing for some customers; payments are declined. We are on it and will post again soon."


def progress(message: str) -> None:
    sys.stderr.write(f"fanout: {message}\n")
    sys.stderr.flush()


# --- processes: CPU and memory of a worker and its pool -------------------------------------------------


def process_tree(roots: list[int]) -> list[int]:
    """The roots and all their descendants that are alive now."""
    seen: list[int] = []
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid in seen or not Path(f"/proc/{pid}").exists():
            continue
        seen.append(pid)
        for task in Path(f"/proc/{pid}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo += [int(child) for child in task.read_text().split()]
    return seen


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime + cutime + cstime: a child that died and was reaped is counted in its parent."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += sum(int(value) for value in fields[11:15])  # fields 14-17 of proc(5); [0] is field 3
    return ticks / CLK_TCK


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (/proc/PID/status) and Pss (smaps_rollup, shared pages divided among their users)."""
    found: dict[str, int] = {}
    for name in ("status", "smaps_rollup"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "Pss"):
                    found[key] = int(value.split()[0])
    return found


def postgres_cpu() -> dict[int, float]:
    """CPU seconds of every PostgreSQL server process on this machine, by pid."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "postgres":
                    found[int(entry.name)] = cpu_seconds([int(entry.name)])
    return found


def postgres_cost(database_url: str, before: dict[int, float]) -> float:
    """CPU the server spent for this run: its backends on the run's database (alive at the end, so not the
    `send` command's) and its background processes (WAL writer, checkpointer...), which other users share."""
    import psycopg

    with psycopg.connect(database_url.split("?")[0], autocommit=True) as connection:
        ours = {pid for (pid,) in connection.execute(
            "SELECT pid FROM pg_stat_activity WHERE (datname = current_database() OR datname IS NULL) "
            "AND pid <> pg_backend_pid()"
        )}  # fmt: skip
    after = postgres_cpu()
    return sum(after[pid] - before.get(pid, 0.0) for pid in ours if pid in after)


class MemorySampler(threading.Thread):
    """Sums the worker tree's memory every 100 ms; keeps the peak of the sums and each process's high-water mark."""

    def __init__(self, roots: list[int]) -> None:
        super().__init__(name="fanout-memory", daemon=True)
        self.roots = roots
        self.peak_rss_kb = 0
        self.peak_pss_kb = 0
        self.hwm_kb: dict[int, int] = {}
        self.samples = 0
        self._stop_event = threading.Event()

    def sample(self) -> tuple[int, int]:
        rss = pss = 0
        for pid in process_tree(self.roots):
            memory = memory_kb(pid)
            rss += memory.get("VmRSS", 0)
            pss += memory.get("Pss", 0)
            self.hwm_kb[pid] = max(self.hwm_kb.get(pid, 0), memory.get("VmHWM", 0))
        self.peak_rss_kb = max(self.peak_rss_kb, rss)
        self.peak_pss_kb = max(self.peak_pss_kb, pss)
        self.samples += 1
        return rss, pss

    def run(self) -> None:
        while not self._stop_event.wait(0.1):
            self.sample()

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(5)

    def finish(self) -> None:
        self.stop()
        self.sample()  # the high-water marks as they stand at the end


# --- workers ---------------------------------------------------------------------------------------------


def start_workers(config: Path, log_prefix: Path, count: int, redis_url: str) -> list[subprocess.Popen[bytes]]:
    """``count`` workers exactly as a user starts them, with Celery's default pool and concurrency; ready ones.

    ``celery -A broadcaster.worker worker`` is ``broadcaster worker``; it also takes a distinct node name each.
    Each worker leads a process group of its own, so its pool can be cleaned up with it.
    """
    env = {**os.environ, "BROADCASTER_CONFIG": str(config)}
    processes: list[subprocess.Popen[bytes]] = []
    names = [f"fanout{i}@{socket.gethostname()}" for i in range(count)]
    for i, name in enumerate(names):
        with Path(f"{log_prefix}-worker{i}.log").open("ab") as log:
            command = [sys.executable, "-m", "celery", "-A", "broadcaster.worker", "worker", "--loglevel=WARNING",
                       f"--hostname={name}"]  # fmt: skip
            processes.append(
                subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            )
    from celery import Celery

    probe = Celery("fanout-probe", broker=f"{redis_url}/0")
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            for i, process in enumerate(processes):
                if process.poll() is not None:
                    log_tail = Path(f"{log_prefix}-worker{i}.log").read_text()[-3000:]
                    raise RuntimeError(f"worker {i} exited at start:\n{log_tail}")
            replies = probe.control.ping(timeout=0.5)
            if set(names) <= {name for reply in replies for name in reply}:
                return processes
        raise RuntimeError(f"the workers did not answer a ping within 90s (logs: {log_prefix}-worker*.log)")
    except BaseException:
        stop_workers(processes)
        raise
    finally:
        probe.close()


def stop_workers(processes: list[subprocess.Popen[bytes]]) -> None:
    """A warm shutdown (SIGTERM), then SIGKILL for the worker's whole process group after 30 s."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + 30
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # its group: the worker and any pool process left behind
        if process.poll() is None:
            process.wait(10)


# --- the log ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_database(kind: str, folder: Path, label: str) -> Iterator[str]:
    """A new, empty log for one run: a SQLite file, or a PostgreSQL database dropped afterwards."""
    if kind == "sqlite":
        try:
            yield f"sqlite:///{folder / label}.db"
        finally:
            dispose_all()
        return
    import psycopg

    name = f"broadcaster_bench_{os.getpid()}_{label.replace('-', '_')}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        dispose_all()
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_URL, connect_timeout=3):
            return True
    except Exception:
        return False


def finished_count(database_url: str, broadcast_id: str) -> int:
    with sessions(database_url)() as session:
        query = select(func.count()).where(
            Delivery.broadcast_id == broadcast_id, Delivery.status.in_(("delivered", "failed"))
        )
        return int(session.scalar(query) or 0)


def wait_finished(database_url: str, broadcast_id: str, total: int, limit: float, label: str) -> bool:
    """Poll the log (a count, four times a second) until every delivery is delivered or failed."""
    deadline = time.monotonic() + limit
    started = last_report = time.monotonic()
    while time.monotonic() < deadline:
        done = finished_count(database_url, broadcast_id)
        if done >= total:
            return True
        if time.monotonic() - last_report >= 5:
            last_report = time.monotonic()
            elapsed = last_report - started
            progress(f"{label}: {done}/{total} finished after {elapsed:.0f}s ({done / elapsed:.0f}/s)")
        time.sleep(0.25)
    return False


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered) + 0.5) - 1))]


def per_second(offsets: Iterable[float]) -> list[int]:
    """How many of ``offsets`` (seconds) fall in each whole second, from 0 to the last."""
    counts = Counter(int(offset) for offset in offsets)
    return [counts[second] for second in range(max(counts, default=-1) + 1)]


def log_figures(database_url: str, broadcast_id: str, t0: float) -> tuple[list[Any], dict[str, Any]]:
    """The broadcast's rows, and the timings the log holds: each delivery's end is its last attempt's end."""
    columns = (Delivery.id, Delivery.type, Delivery.target, Delivery.status, Delivery.attempts, Delivery.created_at,
               Delivery.updated_at, Delivery.error)  # fmt: skip
    ends = select(Attempt.delivery_id, Attempt.started_at, Attempt.duration_seconds).join(
        Delivery, Delivery.id == Attempt.delivery_id
    )
    with sessions(database_url)() as session:
        rows: list[Any] = list(session.execute(select(*columns).where(Delivery.broadcast_id == broadcast_id)))
        attempts = session.execute(ends.where(Delivery.broadcast_id == broadcast_id)).all()
    ended: dict[str, float] = {}
    for delivery_id, started_at, duration in attempts:
        ended[delivery_id] = max(ended.get(delivery_id, 0.0), started_at.timestamp() + (duration or 0.0))
    finished = [row for row in rows if row.status in ("delivered", "failed")]
    end_of = {row.id: ended.get(row.id, row.updated_at.timestamp()) for row in finished}
    latencies = [end_of[row.id] - row.created_at.timestamp() for row in finished if row.status == "delivered"]
    delivered = sum(row.status == "delivered" for row in rows)
    first, last = min(end_of.values(), default=t0), max(end_of.values(), default=t0)
    wall = last - t0
    created = [row.created_at.timestamp() for row in rows]
    return rows, {
        "deliveries": len(rows),
        "delivered": delivered,
        "failed": len(finished) - delivered,
        "unfinished": len(rows) - len(finished),
        "failed_by_reason": dict(
            Counter((row.error or "?").split(":")[0] for row in finished if row.status == "failed")
        ),
        "attempts": sum(row.attempts for row in rows),
        "wall_s": round(wall, 3),
        "per_second": round(delivered / wall, 1) if wall > 0 else None,
        "enqueued_s": round(max(created, default=t0) - t0, 3),
        "first_delivered_s": round(first - t0, 3),
        # from the first delivery to the last: the rate once the `send` command has enqueued the deliveries
        "per_second_while_delivering": round(delivered / (last - first), 1) if last > first else None,
        "p50_ms": round(1000 * (percentile(latencies, 0.50) or 0), 1),
        "p99_ms": round(1000 * (percentile(latencies, 0.99) or 0), 1),
        "max_ms": round(1000 * max(latencies, default=0), 1),
        "end_times_from": "attempts" if ended else "updated_at",
        # deliveries finished in each second after `send` started: where the run waits, starts late or tails off
        "finished_per_second": per_second(end - t0 for end in end_of.values()),
    }


# --- the emulators ---------------------------------------------------------------------------------------


def emulator_figures(sandbox: Sandbox, rows: list[Any]) -> dict[str, Any]:
    """What the emulators accepted, against the log's targets: received, lost, duplicated, unexpected."""
    got: Counter[tuple[str, str]] = Counter()
    for mail in sandbox.smtp.received():
        got.update(("email", recipient.lower()) for recipient in mail.recipients)
    got.update(("sms", r.note["to"]) for r in sandbox.http.received("twilio.message") if r.status == 201)
    for endpoint, kind in (("twitter.tweet", "twitter"), ("slack.post", "slack"), ("webhook", "webhook")):
        got.update((kind, "") for r in sandbox.http.received(endpoint) if 200 <= r.status < 300)

    def key(row: Any) -> tuple[str, str]:
        return (row.type, row.target.lower() if row.type == "email" else row.target if row.type == "sms" else "")

    expected = {key(row) for row in rows}
    return {
        "received": len(expected & set(got)),
        "lost": len(expected - set(got)),
        "duplicated": sum(n - 1 for n in got.values()),
        "unexpected": len(set(got) - expected),
    }


def channels(sandbox: Sandbox) -> dict[str, dict[str, Any]]:
    """Email and SMS to the subscribers only (no configured recipients), plus X, Slack and the blog."""
    return {
        "email": {**sandbox.channel_config("email"), "recipients": [], "audience": "subscribers"},
        "sms": {**sandbox.channel_config("sms"), "recipients": [], "audience": "subscribers"},
        "twitter": sandbox.channel_config("twitter"),
        "slack": sandbox.channel_config("slack"),
        "blog": sandbox.channel_config("webhook", "blog"),
    }


def phone_numbers(count: int) -> list[str]:
    """Distinct numbers that ``phonenumbers`` calls valid: +1 415 555 0000 on, then the next area codes."""
    numbers: list[str] = []
    for area in (415, 628, 650, 510, 408, 707, 925, 831, 209, 530):
        for line in range(10_000):
            if len(numbers) == count:
                return numbers
            with contextlib.suppress(ValueError):
                numbers.append(normalise_phone(f"+1{area}555{line:04d}"))
    if len(numbers) < count:
        raise SystemExit(f"cannot make {count} valid phone numbers")
    return numbers


def subscriber_csv(count: int) -> list[str]:
    """``count`` subscribers following every component: half by email (the odd one more), half by SMS."""
    texts = count // 2
    lines = ["email,phone,components"]
    lines += [f"user{i}@example.com,," for i in range(count - texts)]
    lines += [f",{number}," for number in phone_numbers(texts)]
    return lines


# --- (a) the emulators' own capacity ---------------------------------------------------------------------


class TwilioConnection:
    """One keep-alive HTTP/1.1 connection posting to Twilio's Messages endpoint, on asyncio streams.

    Not httpx: on this machine httpx's async pool served 50-300 requests/s whatever the concurrency, so it
    would have measured itself rather than the emulators (which answer 2,000-3,000 requests/s).
    """

    def __init__(self, http_url: str) -> None:
        self.host, port = http_url.removeprefix("http://").rsplit(":", 1)
        self.port = int(port)
        self.path = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
        self.auth = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, to: str) -> int:
        body = urlencode({"To": to, "From": FROM_NUMBER, "Body": BODY}).encode()
        head = (f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nAuthorization: Basic {self.auth}\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\nAccept: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n")  # fmt: skip
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        try:
            writer.write(head.encode() + body)
            lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            await reader.readexactly(int(headers.get("content-length", 0)))
        except BaseException:
            await self.close()
            raise
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return int(lines[0].split()[1])

    async def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def hammer(http_url: str, smtp_port: int, count: int, concurrency: int) -> dict[str, Any]:
    """``count`` requests, ``concurrency`` at once: alternately an SMS POST to Twilio's Messages endpoint (over
    keep-alive connections) and an SMTP transaction (a connection each, as one message is sent).

    The senders share one iterator of request numbers; each takes the next when its last one is answered.
    """
    import aiosmtplib

    errors: Counter[str] = Counter()
    numbers = phone_numbers(count // 2 + 1)
    jobs = iter(range(count))
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "status@example.com", "{to}", "Checkout is failing"
    message.set_content(BODY)
    mail = message.as_bytes()  # built once: the client should cost the emulators' measurement as little as it can

    async def sender() -> None:
        connection = TwilioConnection(http_url)
        for i in jobs:
            try:
                if i % 2:
                    status = await connection.post(numbers[i // 2])
                    if status != 201:
                        errors[f"http {status}"] += 1
                else:
                    recipient = f"cap{i}@example.com"
                    await aiosmtplib.send(mail.replace(b"{to}", recipient.encode()), sender="status@example.com",
                                          recipients=[recipient], hostname="127.0.0.1", port=smtp_port,
                                          start_tls=False, local_hostname="localhost", timeout=30)  # fmt: skip
            except Exception as exc:
                errors[type(exc).__name__] += 1
        await connection.close()

    started = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(sender() for _ in range(concurrency))), timeout=60 + count / 10)
    seconds = time.perf_counter() - started
    return {
        "requests": count,
        "concurrency": concurrency,
        "seconds": round(seconds, 3),
        "per_second": round(count / seconds, 1),
        "errors": dict(errors),
    }


def measure_capacity(sandbox: Sandbox, count: int) -> dict[str, Any]:
    """Run ``hammer`` in a process of its own (so the client does not share the emulators' interpreter) at each
    of ``CAPACITY_CONCURRENCY``; the capacity is the best rate of a level that had no errors."""
    levels = []
    for concurrency in CAPACITY_CONCURRENCY:
        sandbox.reset()
        progress(f"capacity: {count} requests, {concurrency} at once")
        options = {"http_url": sandbox.http.url, "smtp_port": sandbox.smtp.port, "count": count}
        completed = subprocess.run(
            [sys.executable, __file__, "--capacity-client", json.dumps({**options, "concurrency": concurrency})],
            capture_output=True,
            text=True,
            timeout=120 + count / 10,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"the capacity client failed:\n{completed.stderr[-3000:]}")
        level: dict[str, Any] = json.loads(completed.stdout)
        level["accepted"] = len(sandbox.smtp.received()) + sum(
            r.status == 201 for r in sandbox.http.received("twilio.message")
        )
        progress(f"capacity: {level['per_second']}/s at {concurrency} at once, errors {level['errors'] or 'none'}")
        levels.append(level)
    sandbox.reset()
    clean = [level for level in levels if not level["errors"]] or levels
    return {"per_second": max(level["per_second"] for level in clean), "levels": levels}


# --- one fan-out -----------------------------------------------------------------------------------------


def fanout(
    sandbox: Sandbox,
    redis_url: str,
    redis_pid: int,
    database: str,
    folder: Path,
    label: str,
    subscribers: int,
    workers: int,
    delivery: dict[str, Any],
    limit: float | None,
) -> dict[str, Any]:
    """One broadcast to ``subscribers`` plus the three single channels, timed from ``send`` to the last delivery."""
    name = f"{label}-{database}"
    with fresh_database(database, folder, label) as database_url:
        redis.Redis.from_url(redis_url).flushall()
        sandbox.reset()
        config = write_config(
            folder / f"{name}.toml",
            {
                "broker_url": f"{redis_url}/0",
                "database_url": database_url,
                "subscribers": {"api_url": API_URL, "signing_key": SIGNING_KEY},
                **({"delivery": delivery} if delivery else {}),
                "channels": channels(sandbox),
            },
        )
        settings = load_settings(config)
        started = time.monotonic()
        imported = import_subscribers(settings, subscriber_csv(subscribers))
        progress(f"{name}: {imported.created} subscribers imported in {time.monotonic() - started:.1f}s")
        processes: list[subprocess.Popen[bytes]] = []
        sampler: MemorySampler | None = None
        try:
            processes = start_workers(config, folder / name, workers, redis_url)
            roots = [process.pid for process in processes]
            sampler = MemorySampler(roots)
            idle_rss_kb, idle_pss_kb = sampler.sample()
            pool_processes = len(process_tree(roots))
            cpu_before = cpu_seconds(process_tree(roots))
            redis_before = cpu_seconds([redis_pid])
            postgres_before = postgres_cpu() if database == "postgresql" else {}
            own_before = resource.getrusage(resource.RUSAGE_SELF)
            children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            sampler.start()
            progress(f"{name}: sending to {subscribers} subscribers + 3 channels, {pool_processes} worker processes")

            t0 = time.time()
            result = run_cli("send", "--config", str(config), "--title", f"Checkout errors ({name})",
                             "--status", "investigating", "--impact", "major", "--message", f"{BODY} [{name} {t0}]",
                             "--json", timeout=600)  # fmt: skip
            send_seconds = time.time() - t0
            children_after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the `send` process, just reaped
            if result.code != 0:
                raise RuntimeError(f"send failed ({result.code}): {result.stderr[-2000:]}")
            summary = result.json[0] if isinstance(result.json, list) else result.json
            broadcast_id, total = str(summary["broadcast_id"]), len(summary["deliveries"])
            complete = wait_finished(database_url, broadcast_id, total, limit or 120 + total / 10, name)

            cpu_after = cpu_seconds(process_tree(roots))
            redis_after = cpu_seconds([redis_pid])
            postgres_spent = postgres_cost(database_url, postgres_before) if database == "postgresql" else 0.0
            own_after = resource.getrusage(resource.RUSAGE_SELF)
            sampler.finish()
            memory = {
                "peak_worker_rss_mb": round(sum(sampler.hwm_kb.values()) / 1024, 1),  # each process's VmHWM, summed
                "peak_worker_rss_sampled_mb": round(sampler.peak_rss_kb / 1024, 1),
                "peak_worker_pss_mb": round(sampler.peak_pss_kb / 1024, 1),
                "idle_worker_rss_mb": round(idle_rss_kb / 1024, 1),
                "idle_worker_pss_mb": round(idle_pss_kb / 1024, 1),
                "memory_samples": sampler.samples,
            }
        finally:
            if sampler is not None:
                sampler.stop()
            stop_workers(processes)
        rows, figures = log_figures(database_url, broadcast_id, t0)
    worker_cpu = cpu_after - cpu_before
    own_cpu = (own_after.ru_utime + own_after.ru_stime) - (own_before.ru_utime + own_before.ru_stime)
    send_cpu = (children_after.ru_utime + children_after.ru_stime) - (
        children_before.ru_utime + children_before.ru_stime
    )
    wall = figures["wall_s"] or 1.0
    run = {
        "subscribers": subscribers,
        **figures,
        "timed_out": not complete,
        **emulator_figures(sandbox, rows),
        "send_cli_s": round(send_seconds, 3),
        "worker_processes": pool_processes,
        "worker_cpu_s": round(worker_cpu, 2),
        "cpu_s_per_delivery": round(worker_cpu / max(1, figures["deliveries"]), 5),
        "worker_cores_busy": round(worker_cpu / wall, 2),
        "other_cpu_s": {
            "send_cli": round(send_cpu, 2),
            "sandbox_and_bench": round(own_cpu, 2),
            "redis": round(redis_after - redis_before, 2),
            **({"postgresql": round(postgres_spent, 2)} if database == "postgresql" else {}),
        },
        **memory,
        "delivery_settings": settings.delivery.model_dump(mode="json"),
    }
    progress(f"{name}: {run['delivered']}/{run['deliveries']} delivered in {run['wall_s']}s "
             f"({run['per_second']}/s), p99 {run['p99_ms']} ms, lost {run['lost']}, duplicated {run['duplicated']}")  # fmt: skip
    return run


def ratio(numerator: Any, denominator: Any) -> float | None:
    return round(numerator / denominator, 3) if numerator and denominator else None


def machine() -> dict[str, Any]:
    import celery

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(memory_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "celery": celery.__version__,
        "load_1m_at_start": os.getloadavg()[0],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    databases = ["postgresql", "sqlite"] if args.database == "both" else [args.database]
    if "postgresql" in databases and not postgres_available():
        if args.database == "postgresql":
            raise SystemExit(f"no PostgreSQL at {POSTGRES_URL} (set BROADCASTER_TEST_POSTGRES_URL)")
        progress(f"no PostgreSQL at {POSTGRES_URL}: SQLite only")
        databases = ["sqlite"]
    naive_delivery: dict[str, Any] = {"batch_size": 1}
    #: ``--delivery in_flight=64``: the fast runs with other [delivery] settings than the defaults
    fast_delivery: dict[str, Any] = {key: json.loads(value) for key, value in (o.split("=", 1) for o in args.delivery)}
    if "batch_size" not in DeliverySettings.model_fields:
        progress("[delivery] batch_size is not a setting yet: the naive run uses the default pipeline")
        naive_delivery = {}
    folder = Path(tempfile.mkdtemp(prefix="broadcaster-fanout-"))
    progress(f"work folder {folder}")
    report: dict[str, Any] = {
        "machine": machine(),
        "latency_ms": round(args.latency * 1000, 1),
        "subscribers": args.subscribers,
        "workers": args.workers,
    }
    redis_url, redis_process = start_redis()
    try:
        with Sandbox(latency=args.latency) as sandbox:
            if not args.skip_capacity:
                report["capacity"] = measure_capacity(sandbox, args.subscribers)
                report["capacity_per_second"] = report["capacity"]["per_second"]
            runs: dict[str, dict[str, Any]] = {}
            for database in databases:
                common = {"sandbox": sandbox, "redis_url": redis_url, "redis_pid": redis_process.pid,
                          "database": database, "folder": folder, "workers": args.workers,
                          "limit": args.run_timeout}  # fmt: skip
                runs[database] = {
                    "fast_small": fanout(label="fast-small", subscribers=args.small, delivery=fast_delivery, **common),
                    "fast": fanout(label="fast", subscribers=args.subscribers, delivery=fast_delivery, **common),
                }
                if not args.skip_naive:
                    naive = fanout(label="naive", subscribers=args.naive_subscribers, delivery=naive_delivery, **common)
                    runs[database]["naive"] = naive
            report["runs"] = runs
    finally:
        redis_process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            redis_process.wait(10)
        if redis_process.poll() is None:
            redis_process.kill()
    report["ratios"] = {}
    for database, runs_of in report["runs"].items():
        fast, small, naive = runs_of["fast"], runs_of["fast_small"], runs_of.get("naive", {})
        ratios: dict[str, Any] = {
            "vs_capacity": ratio(fast["per_second"], report.get("capacity_per_second")),
            "vs_naive": ratio(fast["per_second"], naive.get("per_second")),
            "memory_small_to_large": ratio(fast["peak_worker_rss_mb"], small["peak_worker_rss_mb"]),
            "pss_small_to_large": ratio(fast["peak_worker_pss_mb"], small["peak_worker_pss_mb"]),
        }
        capacity, naive_ratio, memory = ratios["vs_capacity"], ratios["vs_naive"], ratios["memory_small_to_large"]
        ratios["targets_met"] = {
            "vs_capacity >= 0.5": capacity is not None and capacity >= 0.5,
            "vs_naive >= 5": naive_ratio is not None and naive_ratio >= 5,
            "memory within 10%": memory is not None and memory <= 1.1,
        }
        report["ratios"][database] = ratios
    if args.keep:
        progress(f"kept {folder}")
    else:
        shutil.rmtree(folder, ignore_errors=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=None, help="half email, half SMS (default 10000)")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per emulator request (default 0.05)")
    parser.add_argument("--database", choices=["postgresql", "sqlite", "both"], default="both")
    parser.add_argument("--workers", type=int, default=1, help="worker processes, each with the default pool")
    parser.add_argument("--naive-subscribers", type=int, default=None, help="the naive run's size (default 1000)")
    parser.add_argument("--small", type=int, default=None, help="the memory comparison's small size (default 1000)")
    parser.add_argument(
        "--delivery",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a [delivery] setting for the fast runs, e.g. in_flight=64 (repeatable)",
    )
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--skip-capacity", action="store_true")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 500 subscribers, 100 small and naive")
    parser.add_argument("--run-timeout", type=float, default=None, help="seconds one fan-out may take")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (configs, worker logs)")
    parser.add_argument("--capacity-client", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.capacity_client:
        options = json.loads(args.capacity_client)
        figures = asyncio.run(hammer(**options))
        sys.stdout.write(json.dumps(figures) + "\n")
        return
    sizes = (500, 100, 100) if args.quick else (10_000, 1000, 1000)
    args.subscribers = args.subscribers or sizes[0]
    args.small = args.small or sizes[1]
    args.naive_subscribers = args.naive_subscribers or sizes[2]
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    os.environ.setdefault("no_proxy", "127.0.0.1,localhost")
    sys.stdout.write(json.dumps(run(args)) + "\n")


if __name__ == "__main__":
    main()
