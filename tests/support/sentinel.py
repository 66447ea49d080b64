"""A Redis Sentinel deployment for tests: a primary, replicas and sentinels, real processes on
loopback ephemeral ports, with a password on the data nodes and another on the sentinels.

The primary can be SIGKILLed; :meth:`SentinelCluster.wait_for_new_primary` then waits for the
sentinels to promote a replica. Every process is stopped by :meth:`SentinelCluster.stop`.
"""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.support.net import free_port

SERVICE = "mymaster"
DATA_PASSWORD = "data-pw-for-tests"
SENTINEL_PASSWORD = "sentinel-pw-for-tests"


@dataclass
class Node:
    """One redis-server process (a data node or a sentinel) and its log file."""

    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None
    password: str = ""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self, timeout: float = 1.0) -> redis.Redis:
        return redis.Redis(
            port=self.port,
            password=self.password or None,
            socket_timeout=timeout,
            retry=None,  # type: ignore[arg-type]
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no goodbye to replicas, sentinels or clients."""
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait()
            self.process = None

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@dataclass
class SentinelCluster:
    """``replicas`` replicas of one primary, watched by ``sentinels`` sentinels (quorum 2).

    Two replicas by default: after the primary is lost, the promoted one still has a replica
    to acknowledge writes (``[tickets] redis_wait_replicas = 1``).
    """

    binary: str
    workdir: Path
    replicas: int = 2
    sentinels: int = 3
    down_after_ms: int = 1000
    failover_timeout_ms: int = 4000
    data: list[Node] = field(default_factory=list)
    watchers: list[Node] = field(default_factory=list)

    @property
    def sentinel_addresses(self) -> list[str]:
        return [node.address for node in self.watchers]

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data = [self._data_node(i, primary=None) for i in range(1 + self.replicas)]
        self._spawn(self.data[0], self._data_args(self.data[0], primary=None))
        self._wait(lambda: self._answers(self.data[0]), "the primary to answer")
        for node in self.data[1:]:
            self._spawn(node, self._data_args(node, primary=self.data[0]))
        self._wait(self._replicas_acknowledge, "the replicas to acknowledge writes")
        self.watchers = [
            Node(free_port(), self.workdir / f"sentinel-{i}.log", password=SENTINEL_PASSWORD)
            for i in range(self.sentinels)
        ]
        for node in self.watchers:
            self._spawn(node, [str(self._sentinel_conf(node)), "--sentinel"])
        self._wait(self._sentinels_see_everyone, "the sentinels to find each other", 30)

    def stop(self) -> None:
        for node in [*self.watchers, *self.data]:
            node.stop()

    def primary(self) -> Node:
        """The data node the sentinels name as primary now."""
        address = self.primary_address()
        (node,) = [node for node in self.data if node.address == address]
        return node

    def primary_address(self) -> str:
        """What the first answering sentinel names as the primary."""
        for node in self.watchers:
            if not node.alive():
                continue
            try:
                with node.client() as client:
                    host, port = client.sentinel_get_master_addr_by_name(SERVICE)
            except redis.RedisError:
                continue
            return f"{host.decode() if isinstance(host, bytes) else host}:{port}"
        raise RuntimeError("no sentinel answers")

    def kill_primary(self) -> Node:
        node = self.primary()
        node.kill()
        return node

    def wait_for_new_primary(self, old: str, within: float = 30.0) -> str:
        """Until a sentinel names a primary other than ``old`` (the promotion is announced);
        its address."""
        deadline = time.monotonic() + within
        while True:
            named = set()
            for node in self.watchers:
                try:
                    with node.client() as client:
                        host, port = client.sentinel_get_master_addr_by_name(SERVICE)
                except redis.RedisError:
                    continue
                named.add(f"{host.decode() if isinstance(host, bytes) else host}:{port}")
            if named - {old}:
                (new,) = named - {old}
                return new
            if time.monotonic() > deadline:
                raise AssertionError(f"no failover from {old} within {within} s\n{self}")
            time.sleep(0.02)

    def wait_for_replicas(self, count: int, within: float = 30.0) -> None:
        """Until the current primary has ``count`` replicas online."""
        self._wait(lambda: self._connected_replicas(self.primary()) >= count, "replicas", within)

    def __str__(self) -> str:
        logs = [
            f"--- {n.log.name}\n{n.log.read_text(errors='replace')[-3000:]}" for n in self.watchers
        ]
        return "\n".join(logs)

    # --- set-up ------------------------------------------------------------------------------

    def _data_node(self, index: int, primary: Node | None) -> Node:
        return Node(free_port(), self.workdir / f"redis-{index}.log", password=DATA_PASSWORD)

    def _data_args(self, node: Node, primary: Node | None) -> list[str]:
        directory = self.workdir / f"data-{node.port}"
        directory.mkdir(exist_ok=True)
        args = [
            "--port", str(node.port), "--bind", "127.0.0.1", "--dir", str(directory),
            "--save", "", "--appendonly", "no",
            "--requirepass", DATA_PASSWORD, "--masterauth", DATA_PASSWORD,
            # A replica (re)joining is served at once instead of after the default 5 s.
            "--repl-diskless-sync-delay", "0",
        ]  # fmt: skip
        if primary is not None:
            args += ["--replicaof", "127.0.0.1", str(primary.port)]
        return args

    def _sentinel_conf(self, node: Node) -> Path:
        path = self.workdir / f"sentinel-{node.port}.conf"
        path.write_text(
            f"port {node.port}\n"
            "bind 127.0.0.1\n"
            f"dir {self.workdir}\n"
            f"requirepass {SENTINEL_PASSWORD}\n"
            f"sentinel sentinel-pass {SENTINEL_PASSWORD}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.data[0].port} 2\n"
            f"sentinel auth-pass {SERVICE} {DATA_PASSWORD}\n"
            f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}\n"
            f"sentinel failover-timeout {SERVICE} {self.failover_timeout_ms}\n"
            f"sentinel parallel-syncs {SERVICE} {self.replicas}\n"
        )
        return path

    def _spawn(self, node: Node, args: list[str]) -> None:
        with node.log.open("ab") as log:
            node.process = subprocess.Popen(
                [self.binary, *args], stdout=log, stderr=subprocess.STDOUT
            )

    def _answers(self, node: Node) -> bool:
        try:
            with node.client(0.5) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def _connected_replicas(self, node: Node) -> int:
        try:
            with node.client(0.5) as client:
                info = client.info("replication")
        except redis.RedisError:
            return 0
        return sum(
            1
            for key, value in info.items()
            if key.startswith("slave")
            and isinstance(value, dict)
            and value.get("state") == "online"
        )

    def _replicas_acknowledge(self) -> bool:
        # A replica is "online" a little before the primary streams writes to it (after a full
        # sync, from its first acknowledgement on): WAIT tells when that has happened.
        if self._connected_replicas(self.data[0]) < self.replicas:
            return False
        with self.data[0].client(0.5) as client:
            client.set("replicas-acknowledge", "yes")
            return int(client.wait(self.replicas, 100)) == self.replicas

    def _sentinels_see_everyone(self) -> bool:
        for node in self.watchers:
            try:
                with node.client(0.5) as client:
                    state = client.sentinel_master(SERVICE)
            except redis.RedisError:
                return False
            if (
                int(state["num-slaves"]) != self.replicas
                or int(state["num-other-sentinels"]) != self.sentinels - 1
            ):
                return False
        return True

    def _wait(self, condition: object, what: str, within: float = 20.0) -> None:
        assert callable(condition)
        deadline = time.monotonic() + within
        while not condition():
            for node in [*self.data, *self.watchers]:
                if node.process is not None and node.process.poll() is not None:
                    raise RuntimeError(f"{node.log.name} exited: {node.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"waited {within} s for {what}\n{self}")
            time.sleep(0.05)
