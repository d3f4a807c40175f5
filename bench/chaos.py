"""Chaos run: a fan-out through real workers while a worker, Redis, PostgreSQL or RabbitMQ is taken away.

Prints one JSON line (progress goes to stderr). Every scenario sends one update to ``--recipients`` email
recipients through one real worker (thread pool, 8 threads) and breaks something a fifth of the way in:

- ``baseline``: nothing breaks;
- ``kill_worker``: the worker is SIGKILLed and a new one started;
- ``flush_redis``: FLUSHALL on the private Redis (the broker, or the guards beside RabbitMQ);
- ``postgres_restart``: the log's PostgreSQL (a private cluster) stops, and starts again ``--pause`` s later;
- ``rabbitmq_restart`` (``--broker rabbitmq``): a private RabbitMQ node stops and starts again the same way,
  after a ``baseline_private_node`` run on that node, which its ratios are against.

Each reports what the emulator received (sent, lost, duplicated), whether every delivery is in the log in a
final state, failures by reason, the duplicates against the in-flight bound (3 x ``[delivery] in_flight`` per
worker process the fault struck), the time to recover (from the service's return to the last delivery
finished), the time against the baseline, and what the workers logged about it. The machine's shared
services are never restarted: the restarts are of private instances (bench/private_services.py).

    python bench/chaos.py [--recipients 1000] [--broker redis|rabbitmq] [--database-url URL] [--pause 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from broadcaster.sandbox import Sandbox
from broadcaster.settings import load_settings
from broadcaster.store.db import sessions
from broadcaster.store.models import Broadcast, Delivery
from broadcaster.testing import delete_rabbitmq_vhost, rabbitmq_vhost, run_cli, start_redis, start_worker, write_config

sys.path.insert(0, str(Path(__file__).parent))
from private_services import PrivatePostgres, PrivateRabbitMQ

CONCURRENCY = 8
RABBITMQ_URL = os.environ.get("BROADCASTER_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672")
FINAL = ("delivered", "failed")
#: what the worker logs say about a fault, counted per scenario (lines that contain each phrase)
LOG_PHRASES = (
    "could not be recorded",
    "wait to be recorded",
    "could not be finished",
    "sweep failed",
    "sweeper:",
    "waits for the sweeper",
    "Connection to broker lost",
    "Cannot connect to",
    "Connected to",
    "Traceback",
)


def progress(message: str) -> None:
    sys.stderr.write(f"chaos: {message}\n")
    sys.stderr.flush()


def wait_finished(database_url: str, broadcast_id: str, limit: float) -> tuple[list[Delivery], bool]:
    """The broadcast's rows once each is delivered or failed (True), or as they stand after ``limit`` s (False).

    The log may be down (the PostgreSQL drill): a failed poll is tried again.
    """
    rows: list[Delivery] = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            with sessions(database_url)() as session:
                rows = list(session.scalars(select(Delivery).where(Delivery.broadcast_id == broadcast_id)))
        except DBAPIError:
            time.sleep(0.2)
            continue
        if rows and all(row.status in FINAL for row in rows):
            return rows, True
        time.sleep(0.05)
    return rows, False


def newest_broadcast(database_url: str, limit: float = 60) -> str:
    """The last broadcast made (each scenario makes one), once the log answers."""
    deadline = time.monotonic() + limit
    while True:
        try:
            with sessions(database_url)() as session:
                found = session.scalar(select(Broadcast.id).order_by(Broadcast.created_at.desc()).limit(1))
            if found is not None:
                return found
            raise RuntimeError("send made no broadcast")
        except DBAPIError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def wait_received(sandbox: Sandbox, count: int, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while len(sandbox.smtp.received()) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the emulator received fewer than {count} mails within {limit:.0f}s")
        time.sleep(0.01)


def stop_process(process: subprocess.Popen[bytes], grace: float = 30) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


class Bench:
    """One chaos run's emulators, recipients and workers; ``scenario`` runs one fan-out."""

    def __init__(self, sandbox: Sandbox, folder: Path, recipients: int) -> None:
        self.sandbox, self.folder = sandbox, folder
        self.recipients = [f"c{i:05d}@example.com" for i in range(recipients)]
        self.workers: list[tuple[subprocess.Popen[bytes], Path]] = []
        self.in_flight = 0

    def config(self, name: str, broker_url: str, guards_url: str | None, database_url: str) -> Path:
        config = write_config(
            self.folder / f"{name}.toml",
            {
                "broker_url": broker_url,
                **({"redis_url": guards_url} if guards_url else {}),
                "database_url": database_url,
                "retry": {"max_attempts": 5, "backoff": "200ms", "backoff_max": "2s"},
                "delivery": {"lease": "5s", "sweep_every": "1s"},
                "channels": {"email": {**self.sandbox.channel_config("email"), "recipients": self.recipients}},
            },
        )
        self.in_flight = load_settings(config).delivery.in_flight
        return config

    def start_worker(self, config: Path, name: str) -> subprocess.Popen[bytes]:
        log = self.folder / f"{name}.log"
        process = start_worker(config, log, concurrency=CONCURRENCY, name=name)
        self.workers.append((process, log))
        return process

    def stop_all(self) -> None:
        for process, _ in self.workers:
            stop_process(process, grace=10)

    def log_offsets(self) -> dict[Path, int]:
        return {log: log.stat().st_size for _, log in self.workers if log.exists()}

    def log_events(self, offsets: dict[Path, int]) -> dict[str, int]:
        """Lines the workers logged since ``offsets`` that name one of ``LOG_PHRASES``."""
        events: Counter[str] = Counter()
        for _, log in self.workers:
            with log.open("rb") as stream:
                stream.seek(offsets.get(log, 0))
                for line in stream.read().decode(errors="replace").splitlines():
                    events.update(phrase for phrase in LOG_PHRASES if phrase in line)
        return dict(events)

    def send(self, config: Path) -> tuple[int, str | None]:
        """``broadcaster send``: its exit code, and the broadcast id it printed (None when it failed, as it may
        when the log goes down before it has printed its summary)."""
        result = run_cli("send", "--config", str(config), "--title", "Chaos", "--status", "investigating",
                         "--message", "Chaos drill.", "--json", timeout=300)  # fmt: skip
        if result.code != 0:
            progress(f"send exited {result.code}: {result.stderr.strip()[-300:]}")
            return result.code, None
        return result.code, str(result.json["broadcast_id"])

    def scenario(
        self, label: str, config: Path, database_url: str, fault: Callable[[], None] | None = None
    ) -> dict[str, Any]:
        """One fan-out; ``fault`` runs (and returns once the service is back) a fifth of the way in.

        Each fault strikes one worker process (the one that holds the fan-out), hence one process's bound: its
        sends in flight, the successes waiting for the recorder and the group it is committing, each at most
        ``in_flight``.
        """
        progress(f"{label}: sending to {len(self.recipients)} recipients")
        self.sandbox.smtp.reset()
        offsets = self.log_offsets()
        since = time.time()
        started = time.monotonic()
        fault_seconds = back = None
        broken_at = 0.0
        # `send` runs beside the fault: the workers deliver while it is still printing its summary
        with ThreadPoolExecutor(1) as pool:
            sending = pool.submit(self.send, config)
            if fault is not None:
                wait_received(self.sandbox, len(self.recipients) // 5)
                broken, broken_at = time.monotonic(), time.time()
                fault()
                back = time.monotonic()
                fault_seconds = back - broken
            send_code, broadcast = sending.result(timeout=320)
        broadcast = broadcast or newest_broadcast(database_url)
        rows, complete = wait_finished(database_url, broadcast, limit=120 + len(self.recipients) / 10)
        ended = time.monotonic()
        time.sleep(0.5)  # a send still in flight after the log said "finished" would be a duplicate: count it
        received = Counter(
            r for mail in self.sandbox.smtp.received() if mail.received_at >= since for r in mail.recipients
        )
        duplicated = sum(n - 1 for n in received.values())
        bound = 3 * self.in_flight
        figures: dict[str, Any] = {
            "deliveries_in_log": len(rows),
            "final_in_log": sum(row.status in FINAL for row in rows),
            "all_final": complete and len(rows) == len(self.recipients),
            "delivered_in_log": sum(row.status == "delivered" for row in rows),
            "sent": len(set(received) & set(self.recipients)),
            "lost": len(set(self.recipients) - set(received)),
            "duplicated": duplicated,
            "duplicate_bound": bound,
            "duplicates_within_bound": duplicated <= bound,
            "failed": dict(Counter((row.error or "?").split(":")[0] for row in rows if row.status == "failed")),
            "seconds": round(ended - started, 2),
            "send_exit_code": send_code,
        }
        if back is not None and fault_seconds is not None:
            # proof that the fault struck mid-fan-out: the deliveries that went out after it began
            mails = self.sandbox.smtp.received()
            figures["sent_after_fault"] = sum(len(m.recipients) for m in mails if m.received_at >= broken_at)
            figures["fault_seconds"] = round(fault_seconds, 2)  # from the fault to the service's return
            figures["recovery_seconds"] = round(ended - back, 2)  # from its return to the last delivery finished
        figures["worker_log"] = self.log_events(offsets)
        progress(f"{label}: sent {figures['sent']}, lost {figures['lost']}, duplicated {duplicated} "
                 f"(bound {bound}), all final {figures['all_final']}, {figures['seconds']}s")  # fmt: skip
        return figures


def restart(stop: Callable[[], None], start: Callable[[], None], pause: float) -> Callable[[], None]:
    """A fault that stops a service, waits ``pause`` seconds (its clients see refused connections) and starts it."""

    def fault() -> None:
        stop()
        time.sleep(pause)
        start()

    return fault


def with_ratio(run: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    return {**run, "time_vs_baseline": round(run["seconds"] / baseline["seconds"], 2)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="broadcaster-chaos-"))
    report: dict[str, Any] = {"recipients": args.recipients, "broker": args.broker, "pause_seconds": args.pause}
    with contextlib.ExitStack() as cleanup:
        if not args.keep:
            cleanup.callback(shutil.rmtree, folder, ignore_errors=True)
        redis_url, redis_process = start_redis()
        cleanup.callback(stop_process, redis_process, 10)
        postgres: PrivatePostgres | None = None
        if args.database_url:
            database_url = args.database_url  # not ours to restart: no postgres_restart
        else:
            postgres = PrivatePostgres()
            cleanup.callback(postgres.close)
            postgres.start()
            database_url = postgres.url
        guards_url: str | None = None
        if args.broker == "rabbitmq":
            vhost = f"broadcaster_chaos_{os.getpid()}"
            broker_url = rabbitmq_vhost(RABBITMQ_URL, vhost)
            cleanup.callback(delete_rabbitmq_vhost, vhost)
            guards_url = f"{redis_url}/1"  # rate limits, circuits and the sweeper's turn live in Redis beside it
        else:
            broker_url = f"{redis_url}/0"
        sandbox = cleanup.enter_context(Sandbox())
        bench = Bench(sandbox, folder, args.recipients)
        cleanup.callback(bench.stop_all)
        config = bench.config("chaos", broker_url, guards_url, database_url)
        report.update(database="private postgresql" if postgres else database_url.split(":", 1)[0],
                      worker_concurrency=CONCURRENCY, in_flight=bench.in_flight)  # fmt: skip
        worker = bench.start_worker(config, "w1")
        baseline = bench.scenario("baseline", config, database_url)
        report["baseline"] = baseline

        def kill_worker() -> None:
            nonlocal worker
            worker.kill()
            worker.wait(10)
            worker = bench.start_worker(config, "w2")

        run_ = bench.scenario("kill_worker", config, database_url, kill_worker)
        report["kill_worker"] = with_ratio(run_, baseline)

        def flush() -> None:
            redis.Redis.from_url(redis_url).flushall()

        report["flush_redis"] = with_ratio(bench.scenario("flush_redis", config, database_url, flush), baseline)
        if postgres is not None:
            fault = restart(postgres.stop, postgres.start, args.pause)
            report["postgres_restart"] = with_ratio(bench.scenario("postgres_restart", config, database_url, fault),
                                                    baseline)  # fmt: skip
        if args.broker == "rabbitmq":
            # The restart drill runs on a node of its own, with its own baseline; only its worker runs meanwhile,
            # so no sweeper re-enqueues its deliveries onto the shared node's vhost.
            stop_process(worker)
            node = PrivateRabbitMQ(folder)
            cleanup.callback(node.close)
            node.start()
            private = bench.config("chaos-private-node", node.url, guards_url, database_url)
            bench.start_worker(private, "w3")
            node_baseline = bench.scenario("baseline_private_node", private, database_url)
            report["baseline_private_node"] = node_baseline
            fault = restart(node.stop, node.start, args.pause)
            run_ = bench.scenario("rabbitmq_restart", private, database_url, fault)
            report["rabbitmq_restart"] = with_ratio(run_, node_baseline)
        if args.keep:
            progress(f"kept {folder} (configs, worker logs, the private services' logs)")
    report["checks"] = {
        name: {
            "nothing_lost": run_["lost"] == 0,
            "all_final_in_log": run_["all_final"],
            "duplicates_within_bound": run_["duplicates_within_bound"],
            "none_failed": not run_["failed"],
        }
        for name, run_ in report.items()
        if isinstance(run_, dict) and "lost" in run_
    }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=1000)
    parser.add_argument("--broker", choices=["redis", "rabbitmq"], default="redis",
                        help="redis: a private Redis; rabbitmq: a fresh vhost on the machine's RabbitMQ "
                             f"({RABBITMQ_URL.split('@')[-1]}), the guards in a private Redis, and a private "
                             "node for the restart")  # fmt: skip
    parser.add_argument("--database-url", default=None,
                        help="the log (default: a private PostgreSQL cluster; given here: no postgres_restart)")  # fmt: skip
    parser.add_argument("--pause", type=float, default=3.0, help="seconds a restarted service stays down")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (configs, logs)")
    args = parser.parse_args()
    if args.recipients < 10:
        parser.error("--recipients must be at least 10")
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    os.environ.setdefault("no_proxy", "127.0.0.1,localhost")
    sys.stdout.write(json.dumps(run(args)) + "\n")


if __name__ == "__main__":
    main()
