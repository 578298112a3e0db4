"""Real `finsent worker` processes and topic readers, for integration tests and benchmarks.

Everything here talks to a real broker: the embedded one (tansu, in memory)
or the persistent one (noida-db, on disk, with transactions; a dev
dependency). Workers run as subprocesses with their own app id, ports and
state, exactly as an operator would start them, with the profile their
broker needs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from monitor import schemas
from monitor.settings import SOURCE_ROOT
from monitor.stream.broker import EmbeddedBroker, free_port
from monitor.stream.clients import create_topics
from monitor.stream.noida import PersistentBroker

BROKER_KINDS = ("tansu", "noida")
# Rebalance faster than a cluster's defaults on the persistent broker: a killed worker's session
# expires after 6 s (tansu's profile already uses 3 s), and noida-db holds a rebalance open for the
# whole rebalance timeout when a member is dead (docs/BROKERS.md), Faust's 60 s by default.
TEST_SESSION_TIMEOUT_S = 6.0
TEST_REBALANCE_TIMEOUT_S = 10.0


class BrokerLike(Protocol):
    @property
    def bootstrap(self) -> str: ...

    profile: str


def open_broker(kind: str, workdir: Path) -> EmbeddedBroker | PersistentBroker:
    """A started broker of `kind` ("tansu" or "noida"); the caller stops it (both are context managers)."""
    if kind == "tansu":
        return EmbeddedBroker(log_file=workdir / "tansu.log").start()
    if kind == "noida":
        return PersistentBroker(workdir / "noida-data").start()
    raise ValueError(f"unknown broker kind {kind!r}: use one of {', '.join(BROKER_KINDS)}")


@dataclass
class TopicNames:
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def __post_init__(self) -> None:
        s = self.suffix
        self.news = f"news-{s}"
        self.comments = f"comments-{s}"
        self.scored = f"scored-{s}"
        self.trends = f"trends-{s}"
        self.alerts = f"alerts-{s}"
        self.deadletter = f"dead-{s}"
        self.trend_events = f"events-{s}"

    def all(self) -> list[str]:
        return [self.news, self.comments, self.scored, self.trends, self.alerts, self.deadletter, self.trend_events]

    def env(self) -> dict[str, str]:
        return {
            "FINSENT_TOPICS__INPUTS": json.dumps([self.news, self.comments]),
            "FINSENT_TOPICS__SCORED": self.scored,
            "FINSENT_TOPICS__TRENDS": self.trends,
            "FINSENT_TOPICS__ALERTS": self.alerts,
            "FINSENT_TOPICS__DEADLETTER": self.deadletter,
            "FINSENT_TOPICS__TREND_EVENTS": self.trend_events,
        }


# A `sitecustomize` for a worker (see `hook_env`): Faust's recovery ends by resuming the input partitions,
# awaiting a (left out) seek, then resuming the flow. A record fetched in that moment is rare (1 to 7
# worker starts in 300 on 2 cores); this holds the moment open until one waits in a stream queue, so a test
# can show what becomes of it.
RESUME_RACE_HOOK = """
import asyncio, logging
try:
    from faust.tables.recovery import Recovery
except ImportError:
    Recovery = None
if Recovery is not None:
    _wait0, _inputs = Recovery._wait, {topics!r}

    def _waiting(app):
        return sum(1 for q in list(app.flow_control._queues) for e in list(q._queue)
                   if getattr(getattr(e, "message", None), "topic", None) in _inputs)

    async def _wait(self, coro, timeout=None):
        name = getattr(getattr(coro, "cr_code", None), "co_name", "")
        result = await _wait0(self, coro, timeout=timeout)
        if name in ("no_seek", "perform_seek"):
            loop = asyncio.get_running_loop()
            until = loop.time() + {seconds}
            while loop.time() < until and not _waiting(self.app):
                await asyncio.sleep(0)
            logging.getLogger("finsent.testing").warning(
                "resume race: %d input records waited in stream queues as recovery ended", _waiting(self.app))
        return result

    Recovery._wait = _wait
"""


def hook_env(directory: Path, *sources: str) -> dict[str, str]:
    """Environment that makes a worker run `sources` at start-up (as its `sitecustomize`) before anything else."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text("\n".join(sources))
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(directory), os.environ.get("PYTHONPATH")]))}


class WorkerProcess:
    """`finsent worker` as a subprocess with its own app id, ports and state dir."""

    def __init__(
        self,
        broker: str | BrokerLike,
        topics: TopicNames,
        model: Path,
        workdir: Path,
        app_id: str | None = None,
        env: dict[str, str] | None = None,
        args: Iterable[str] = (),
        instance: str | None = None,
    ) -> None:
        # A bare bootstrap string means the embedded broker; a broker object brings its own profile.
        self.bootstrap = broker if isinstance(broker, str) else broker.bootstrap
        self.profile = "embedded" if isinstance(broker, str) else broker.profile
        self.topics = topics
        self.model = model
        self.workdir = workdir
        self.app_id = app_id or f"test-{topics.suffix}"
        self.extra_env = env or {}
        self.args = list(args)
        # Static group membership on the persistent broker: noida-db never expires a dead member, so a
        # restarted worker only gets its partitions back by rejoining under the same instance id.
        self.instance = instance or (f"{self.app_id}-0" if self.profile == "kafka" else None)
        self.metrics_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"worker-{self.metrics_port}.log"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self, timeout: float = 60.0) -> WorkerProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(self.topics.env())
        env.update(
            {
                "FINSENT_KAFKA__BOOTSTRAP": self.bootstrap,
                "FINSENT_KAFKA__PROFILE": self.profile,
                "FINSENT_WORKER__COMMIT_INTERVAL_S": "1.0",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.profile == "kafka":
            env["FINSENT_KAFKA__SESSION_TIMEOUT_S"] = str(TEST_SESSION_TIMEOUT_S)
            env["FINSENT_KAFKA__REBALANCE_TIMEOUT_S"] = str(TEST_REBALANCE_TIMEOUT_S)
        if self.instance:
            env["FINSENT_WORKER__GROUP_INSTANCE_ID"] = self.instance
        env.update(self.extra_env)
        cmd = [
            sys.executable, "-m", "monitor.cli", "worker", "--model", str(self.model),
            "--metrics-port", str(self.metrics_port), "--web-port", str(free_port()),
            "--datadir", str(self.workdir / "state"), "--app-id", self.app_id, "--no-create-topics", *self.args,
        ]  # fmt: skip
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=SOURCE_ROOT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            if "finsent_model_loaded 1.0" in self.scrape():
                return self
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready in {timeout} s:\n{self.log_tail()}")

    def scrape(self) -> str:
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=2) as r:
                return r.read().decode()
        except OSError:
            return ""

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        total = 0.0
        for line in self.scrape().splitlines():
            if not line.startswith(name) or line.startswith("#"):
                continue
            head, _, value = line.rpartition(" ")
            metric_name = head.split("{", 1)[0]
            if metric_name != name:
                continue
            if labels and not all(f'{k}="{v}"' in head for k, v in labels.items()):
                continue
            total += float(value)
        return total

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if getattr(self, "_log", None):
            self._log.close()


def make_topics(bootstrap: str, topics: TopicNames, partitions: int = 4, input_max_bytes: int | None = None) -> None:
    """Create every topic; `input_max_bytes` raises the input topics' `max.message.bytes`.

    A Kafka broker refuses a record over its limit (1 MB by default) at produce time, so a test
    that sends the worker an oversized item must first let the input topic take it.
    """
    inputs = [topics.news, topics.comments]
    configs = {"max.message.bytes": str(input_max_bytes)} if input_max_bytes else None
    create_topics(bootstrap, inputs, partitions, configs=configs)
    create_topics(bootstrap, [t for t in topics.all() if t not in inputs], partitions)


def produce(
    bootstrap: str,
    topic: str,
    values: Iterable[bytes | dict[str, Any]],
    key_of_id: bool = True,
    partition: int | None = None,
    pace_every: int = 0,
    pace_s: float = 0.0,
) -> int:
    """Produce JSON dicts (keyed by id) or raw bytes; optionally one partition and paced.

    Every send is confirmed: a record the broker did not take fails here, by name, instead of
    showing up later as a window one item short. No idempotent producer: the embedded broker
    has no producer ids (kafka-python 3 turns idempotence on by default).
    """
    producer = KafkaProducer(
        bootstrap_servers=[bootstrap], linger_ms=5, max_request_size=16 * 1024 * 1024, enable_idempotence=False, acks=1
    )
    n = 0
    futures: list[Any] = []
    try:
        for v in values:
            if isinstance(v, dict):
                key = str(v.get("id", "")).encode() if key_of_id and v.get("id") is not None else None
                futures.append(producer.send(topic, key=key, value=json.dumps(v).encode(), partition=partition))
            else:
                futures.append(producer.send(topic, value=v, partition=partition))
            n += 1
            if pace_every and n % pace_every == 0:
                producer.flush()
                time.sleep(pace_s)
        producer.flush()
        for i, fut in enumerate(futures):
            try:
                fut.get(timeout=30)
            except Exception as exc:
                raise AssertionError(f"record {i} of {len(futures)} to {topic} was not produced: {exc!r}") from exc
    finally:
        producer.close()
    return n


class TopicReader:
    """Reads every record of a topic from offset 0, incrementally (tansu-safe: no end_offsets).

    `values()` checks each record, once, against the JSON Schema of its topic
    (monitor/schemas.py `kind_of_topic`: scored, trends, alerts and dead-letter
    topics) and raises `schemas.RecordInvalid` naming the record and field.
    Input and internal topics are not checked, nor is anything outside a
    source checkout (the schemas live in docs/schemas/).
    """

    def __init__(self, bootstrap: str, topic: str, partitions: int = 4, *, committed_only: bool = False) -> None:
        # committed_only: `read_committed`, records of aborted or open transactions are never returned.
        isolation = "read_committed" if committed_only else "read_uncommitted"
        self.consumer = KafkaConsumer(
            bootstrap_servers=[bootstrap], enable_auto_commit=False, group_id=None, isolation_level=isolation
        )
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        self.consumer.assign(tps)
        self.consumer.seek_to_beginning(*tps)
        self.records: list[Any] = []
        self.kind = schemas.kind_of_topic(topic) if schemas.SCHEMA_DIR.is_dir() else None
        self._checked = 0  # records[:_checked] have been validated

    def poll(self, timeout_s: float = 0.5) -> list[Any]:
        got = []
        for recs in self.consumer.poll(timeout_ms=int(timeout_s * 1000)).values():
            got.extend(recs)
        self.records.extend(got)
        return got

    def values(self) -> list[dict[str, Any]]:
        vals = [json.loads(r.value) for r in self.records]
        if self.kind is not None:
            for r, v in zip(self.records[self._checked :], vals[self._checked :], strict=True):
                schemas.validate_record(self.kind, v, where=f"{r.topic}[{r.partition}]@{r.offset}")
            self._checked = len(vals)
        return vals

    def wait_for(self, predicate: Any, timeout: float = 60.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll()
            vals = self.values()
            if predicate(vals):
                return vals
        return self.values()

    def close(self) -> None:
        self.consumer.close()
