"""Apache Kafka in KRaft mode (one combined broker + controller) from Maven Central jars.

Version 4.1.1: aiokafka >= 0.13 negotiates API versions per connection, so it speaks to 4.x brokers
(which dropped the old Metadata v0/v1 requests); the integration tests prove it on every run.
"""

import base64
import shutil
import socket
import struct
import uuid
from pathlib import Path

from payplane.devinfra import versions
from payplane.devinfra.builds import fetch_maven_runtime_classpath, run_logged
from payplane.devinfra.components.base import Component
from payplane.devinfra.errors import MissingToolError
from payplane.devinfra.procs import ManagedProcess
from payplane.devinfra.waiting import wait_healthy

JVM_OPTS = ["-Xms256m", "-Xmx768m", "-XX:+UseG1GC", "-Djava.awt.headless=true"]
LOG4J2_PROPERTIES = """\
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
"""


def _java() -> str:
    path = shutil.which("java")
    if path is None:
        raise MissingToolError("java", "apt-get install openjdk-17-jre-headless")
    return path


def api_versions_ok(port: int, timeout_s: float = 2.0) -> bool:
    """Send a Kafka ApiVersions v0 request and require error_code 0 in the answer."""
    correlation_id = 7
    client_id = b"payplane-probe"
    body = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as conn:
            conn.sendall(struct.pack(">i", len(body)) + body)
            header = conn.recv(10)
    except OSError:  # refused or reset while the broker starts or stops: not healthy (status must not crash)
        return False
    if len(header) < 10:
        return False
    _size, got_correlation, error_code = struct.unpack(">iih", header)
    return bool(got_correlation == correlation_id and error_code == 0)


class Kafka(Component):
    name = "kafka"
    start_timeout_s = 90.0

    @property
    def libs_dir(self) -> Path:
        return self.settings.cache_dir / f"kafka-{versions.KAFKA}" / "libs"

    @property
    def home(self) -> Path:
        return self.settings.state_dir / "kafka"

    def build(self) -> None:
        fetch_maven_runtime_classpath(
            coordinates=[
                ("org.apache.kafka", "kafka_2.13", versions.KAFKA),
                ("org.apache.logging.log4j", "log4j-api", versions.KAFKA_LOG4J),
                ("org.apache.logging.log4j", "log4j-core", versions.KAFKA_LOG4J),
                ("org.apache.logging.log4j", "log4j-slf4j-impl", versions.KAFKA_LOG4J),
            ],
            dest=self.libs_dir,
            log_path=self.build_log,
        )

    def ports(self) -> list[int]:
        return [self.settings.ports.kafka, self.settings.ports.kafka_controller]

    def _java_argv(self, main_class: str, *args: str) -> list[str]:
        return [
            _java(),
            *JVM_OPTS,
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            "-cp",
            f"{self.libs_dir}/*",
            main_class,
            *args,
        ]

    def processes(self) -> list[ManagedProcess]:
        return [self.process("kafka", self._java_argv("kafka.Kafka", str(self.home / "server.properties")))]

    def _write_config(self) -> None:
        ports = self.settings.ports
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "log4j2.properties").write_text(LOG4J2_PROPERTIES)
        (self.home / "server.properties").write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{ports.kafka_controller}",
                    f"listeners=PLAINTEXT://127.0.0.1:{ports.kafka},CONTROLLER://127.0.0.1:{ports.kafka_controller}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{ports.kafka}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                    f"log.dirs={self.home / 'data'}",
                    "num.partitions=1",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=4",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "transaction.state.log.num.partitions=4",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=false",
                    "delete.topic.enable=true",
                    "",
                ]
            )
        )

    def _format_storage(self) -> None:
        if (self.home / "data" / "meta.properties").exists():
            return
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        while cluster_id.startswith("-"):
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        run_logged(
            self._java_argv(
                "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(self.home / "server.properties")
            ),
            what="kafka storage format",
            log_path=self.build_log,
        )

    def healthy(self) -> bool:
        return api_versions_ok(self.settings.ports.kafka)

    def start(self) -> None:
        self._write_config()
        self._format_storage()
        (proc,) = self.processes()
        proc.start()
        wait_healthy(self.name, self.healthy, self.start_timeout_s, proc, poll_s=0.5)

    def endpoints(self) -> dict[str, str]:
        return {"KAFKA_BOOTSTRAP": f"127.0.0.1:{self.settings.ports.kafka}"}
