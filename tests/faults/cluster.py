"""A three-broker KRaft cluster on loopback, from the broker jars services.sh resolved.

Every node is broker and controller; replication factor 3 with min.insync.replicas 2, so one
node may die without losing an acknowledged write. Used by the broker-failure fault run.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICES = Path(os.environ.get("SERVICES_DIR", ROOT / ".services"))
LIBS = SERVICES / "kafka" / "libs"
LOG4J = ROOT / "scripts" / "kafka" / "log4j.properties"


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class KafkaCluster:
    """Three Kafka nodes: start, kill one, restart it, stop all."""

    def __init__(self, base: Path, first_port: int = 29092) -> None:
        self.base = base
        self.ports = {node: first_port + node for node in (1, 2, 3)}
        self.controller_ports = {node: first_port + 100 + node for node in (1, 2, 3)}
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        cluster_id = self._java("kafka.tools.StorageTool", "random-uuid").strip()
        voters = ",".join(f"{n}@127.0.0.1:{p}" for n, p in self.controller_ports.items())
        for node in self.ports:
            data = base / f"node-{node}"
            data.mkdir(parents=True)
            (base / f"node-{node}.properties").write_text(
                "\n".join(
                    [
                        "process.roles=broker,controller",
                        f"node.id={node}",
                        f"controller.quorum.voters={voters}",
                        f"listeners=PLAINTEXT://127.0.0.1:{self.ports[node]},"
                        f"CONTROLLER://127.0.0.1:{self.controller_ports[node]}",
                        f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.ports[node]}",
                        "controller.listener.names=CONTROLLER",
                        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                        "inter.broker.listener.name=PLAINTEXT",
                        f"log.dirs={data}",
                        "default.replication.factor=3",
                        "min.insync.replicas=2",
                        "offsets.topic.replication.factor=3",
                        "transaction.state.log.replication.factor=3",
                        "transaction.state.log.min.isr=2",
                        "group.initial.rebalance.delay.ms=0",
                        "auto.create.topics.enable=false",
                        "unclean.leader.election.enable=false",
                    ]
                )
                + "\n"
            )
            self._java(
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(base / f"node-{node}.properties"),
            )

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{p}" for p in self.ports.values())

    def _java(self, *args: str) -> str:
        return subprocess.run(
            ["java", "-Xmx256m", "-cp", f"{LIBS}/*", *args],
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def start(self, node: int) -> None:
        log = open(self.base / f"node-{node}.out", "ab")  # noqa: SIM115
        logs_dir = self.base / f"logs-{node}"
        logs_dir.mkdir(exist_ok=True)
        self.procs[node] = subprocess.Popen(
            [
                "java",
                "-Xms256m",
                "-Xmx512m",
                f"-Dkafka.logs.dir={logs_dir}",
                f"-Dlog4j.configuration=file:{LOG4J}",
                "-cp",
                f"{LIBS}/*",
                "kafka.Kafka",
                str(self.base / f"node-{node}.properties"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def start_all(self, timeout: float = 120) -> None:
        for node in self.ports:
            self.start(node)
        self.wait_listening(list(self.ports), timeout)

    def wait_listening(self, nodes: list[int], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not all(_port_open(self.ports[n]) for n in nodes):
            if time.monotonic() > deadline:
                raise TimeoutError(f"kafka nodes {nodes} not listening; see {self.base}")
            time.sleep(0.5)

    def kill(self, node: int) -> None:
        self.procs[node].kill()
        self.procs[node].wait()

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()

    def node_of_port(self, port: int) -> int:
        return next(n for n, p in self.ports.items() if p == port)


def new_cluster_dir(tmp: Path) -> Path:
    path = tmp / f"kafka-cluster-{uuid.uuid4().hex[:6]}"
    path.mkdir()
    return path
