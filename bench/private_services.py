"""Private PostgreSQL and RabbitMQ instances for the chaos benchmark, to stop and start mid-run.

The machine's own services are shared with other people's tests, so a restart drill never touches them: each
instance here lives in a temporary folder, listens on a free loopback port and is removed on ``close()``.
PostgreSQL runs as the ``postgres`` OS user (initdb refuses root); RabbitMQ runs as a node of its own name,
ports, database, logs, config and Erlang cookie (``HOME`` is its folder), registered with the machine's epmd.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from broadcaster.testing import free_port


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _wait_closed(port: int, limit: float) -> None:
    deadline = time.monotonic() + limit
    while _listening(port) and time.monotonic() < deadline:
        time.sleep(0.1)


class PrivatePostgres:
    """A throw-away PostgreSQL cluster (trust auth, no fsync) on a free loopback port."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
        self.bin = Path(found[-1]).parent
        # a folder of its own, not inside the bench's (root's, mode 0700): the postgres user must enter it
        self.folder = Path(tempfile.mkdtemp(prefix="broadcaster-chaos-postgres-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", timeout=120)

    def _run(self, tool: str, *args: str, timeout: float) -> None:
        done = subprocess.run([*self._as_postgres, str(self.bin / tool), *args], capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed: {(done.stderr or done.stdout).strip()[-2000:]}")

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off -c max_connections=200"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"), "-w", "-t", "60",
                  "-o", options, "start", timeout=90)  # fmt: skip

    def stop(self) -> None:
        """A fast shutdown: open connections are cut, as in a real restart or failover."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop", timeout=90)
        _wait_closed(self.port, 10)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop", timeout=60)
        shutil.rmtree(self.folder, ignore_errors=True)


class PrivateRabbitMQ:
    """A RabbitMQ node of its own (``broadcaster_chaos_PID@localhost``), guest/guest on a free loopback port."""

    SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"  # the real script: /usr/sbin's wrapper logs to /var/log
    CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"

    def __init__(self, folder: Path) -> None:
        if not Path(self.SERVER).exists():
            raise RuntimeError(f"{self.SERVER} is missing (apt-get install rabbitmq-server)")
        self.folder = folder / "rabbitmq"
        self.folder.mkdir()
        self.node = f"broadcaster_chaos_{os.getpid()}@localhost"
        self.port, dist_port = free_port(), free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        (self.folder / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n")
        (self.folder / "enabled_plugins").write_text("[].\n")
        (self.folder / "rabbitmq-env.conf").write_text("")  # not /etc/rabbitmq's: that one names the shared node
        self.env = {
            **os.environ,
            "HOME": str(self.folder),  # its own Erlang cookie, shared with the rabbitmqctl calls below
            "RABBITMQ_CONF_ENV_FILE": str(self.folder / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.folder / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.folder / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.folder / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.folder / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.folder / "node.pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }
        self.process: subprocess.Popen[bytes] | None = None

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.CTL, "-n", self.node, *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip

    def start(self, limit: float = 90) -> None:
        with (self.folder / "server.log").open("ab") as log:
            self.process = subprocess.Popen([self.SERVER], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = (self.folder / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the private RabbitMQ node exited at start:\n{tail}")
            # await_startup fails at once until the node has registered with epmd: ask again
            if self.ctl("-q", "await_startup", "--timeout", "10", timeout=20).returncode == 0 and _listening(self.port):
                return
            time.sleep(0.5)
        raise RuntimeError(f"the private RabbitMQ node did not start within {limit:.0f}s")

    def stop(self) -> None:
        """``rabbitmqctl stop``: the node closes every connection and its process exits."""
        self.ctl("-q", "stop")
        if self.process is not None:
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait(10)
        _wait_closed(self.port, 10)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(Exception):
                self.stop()
            if self.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, 9)
        shutil.rmtree(self.folder, ignore_errors=True)
