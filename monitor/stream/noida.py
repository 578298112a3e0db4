"""A second, persistent Kafka-protocol broker for tests and fault runs: noida-db.

tansu (monitor/stream/broker.py) keeps nothing on disk and has neither
idempotent producers nor transactions, so it can only run the worker's
`embedded` profile. noida-db (the `noida-db` wheel, a dev dependency) keeps
its log in a data directory across restarts and supports idempotent
producers and transactions, so the plain `kafka` profile, a broker crash and
exactly-once processing can be exercised against it. It is an emulator of
unknown depth: what it gets wrong is written down in docs/BROKERS.md.

The binary inside the package is run directly: the package's console script
starts it as a child, and killing the script can leave the broker running.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import IO

from monitor.stream.broker import BrokerError, BrokerProcess, _port_open, executable, free_port, terminate

log = logging.getLogger(__name__)


def noida_binary() -> Path:
    """The broker binary inside the installed noida_db package (made executable if the wheel lost the bit)."""
    override = os.environ.get("FINSENT_NOIDA")
    if override:
        p = Path(override)
    else:
        try:
            import noida_db  # type: ignore[import-untyped, import-not-found, unused-ignore]
        except ImportError:
            raise BrokerError("the persistent test broker needs noida-db: pip install 'finsent[dev]'") from None
        p = Path(noida_db.__file__).parent / "noida-db"
    return executable(p, "noida-db")


class PersistentBroker(BrokerProcess):
    """A noida-db process serving only Kafka on loopback, its data in `data_dir`.

    `start()` after `kill()` or `stop()` comes back on the same port and the
    same data: that is the broker-crash test. Use as a context manager or
    start()/stop().
    """

    profile = "kafka"

    def __init__(self, data_dir: Path, port: int = 0, host: str = "127.0.0.1", log_file: Path | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port or free_port(host)
        self.log_file = log_file or self.data_dir.with_name(self.data_dir.name + ".log")
        self.starts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self, timeout: float = 20.0) -> PersistentBroker:
        if self.running:
            return self
        if _port_open(self.host, self.port):
            raise BrokerError(f"port {self.port} on {self.host} is already in use; choose another")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(noida_binary()), "start", "--only", "kafka", "--host", self.host,
            "--kafka-port", str(self.port), "--data-dir", str(self.data_dir),
        ]  # fmt: skip
        self._log = open(self.log_file, "ab")  # noqa: SIM115 - closed in stop()/kill()
        self._proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise BrokerError(f"noida-db exited during start (port {self.port}): {self.output_tail()}")
            if _port_open(self.host, self.port) and self._admin_ok():
                log.info("noida-db ready on %s (data in %s)", self.bootstrap, self.data_dir)
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"noida-db did not become ready on {self.bootstrap} within {timeout:.0f} s")

    def output_tail(self, lines: int = 3) -> str:
        try:
            text = self.log_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return " | ".join(text.splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL: the crash, with whatever the broker had not yet written to its data directory."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        self._close_log()

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        terminate(proc, timeout)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> PersistentBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
