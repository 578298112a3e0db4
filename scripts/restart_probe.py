"""Restart a consumer again and again on the persistent broker while input flows; report records never read.

    .venv/bin/python scripts/restart_probe.py --cycles 30          # finsent workers, SIGKILLed and restarted
    .venv/bin/python scripts/restart_probe.py --cycles 40 --plain  # a plain aiokafka consumer, for comparison

A diagnostic, not a test: the loss it looks for is rare (about 1 restart in 30
on 2 cores), too rare for a CI test to catch without running for minutes. It
needs the dev dependencies (noida-db) and runs from the repository root.

A record the consumer group has committed past without handling is lost; one at
or above the committed offset is only pending (a restart reads it). `--trace`
makes every worker log each delivery, ack and commit of the input partitions
(through a `sitecustomize` module the probe writes into its work directory), and
prints the lines around each lost record: what a rare loss needs to be explained.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monitor.testing import TopicNames, WorkerProcess, make_topics, open_broker
from tests.test_faults import Paced, on_topic
from tests.tiny_bundle import make_bundle


def gaps(at: dict[str, tuple[int, int]], done: set[str]) -> list[tuple[int, int, int]]:
    """(partition, first, last) of each run of offsets on the input whose record was never handled."""
    out: list[tuple[int, int, int]] = []
    for p, o in sorted(at[i] for i in at if i not in done):
        if out and out[-1][0] == p and out[-1][2] == o - 1:
            out[-1] = (p, out[-1][1], o)
        else:
            out.append((p, o, o))
    return out


async def plain_cycle(bootstrap: str, topic: str, seen: set[str], seconds: float) -> None:
    import json

    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id="probe", group_instance_id="probe-0",
        enable_auto_commit=False, auto_offset_reset="earliest", session_timeout_ms=10_000,
    )  # fmt: skip
    await consumer.start()
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                seen.update(json.loads(r.value)["id"] for r in records)
        await consumer.commit()
    finally:
        await consumer.stop()


TRACE = '''"""Written by scripts/restart_probe.py --trace: log deliveries, acks and commits of input partitions."""
import functools, logging
try:
    from faust.transport.consumer import Consumer, ThreadDelegateConsumer
except ImportError:
    Consumer = None
if Consumer is not None:
    log = logging.getLogger("probe.trace")
    getmany0, ack0, commit0 = Consumer.getmany, Consumer.ack, ThreadDelegateConsumer._commit

    @functools.wraps(getmany0)
    async def getmany(self, timeout):
        async for tp, m in getmany0(self, timeout):
            if tp.topic.startswith("{prefix}"):
                log.info("TRACE deliver p%d %d gen %s", tp.partition, m.offset, self.app.consumer_generation_id)
            yield tp, m

    def ack(self, message):
        done = ack0(self, message)
        if message.tp.topic.startswith("{prefix}"):
            log.info("TRACE ack p%d %d %s", message.tp.partition, message.offset, done)
        return done

    async def commit(self, offsets):
        log.info("TRACE commit %s", {{tp.partition: o for tp, o in offsets.items() if tp.topic.startswith("{prefix}")}})
        return await commit0(self, offsets)

    Consumer.getmany, Consumer.ack, ThreadDelegateConsumer._commit = getmany, ack, commit
'''


def committed(bootstrap: str, group: str, topic: str, partitions: int = 4) -> dict[int, int]:
    """The group's committed offset per partition (-1 where none)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=[bootstrap], group_id=group, enable_auto_commit=False)
    try:
        return {p: consumer.committed(TopicPartition(topic, p)) or -1 for p in range(partitions)}
    finally:
        consumer.close()


def trace_lines(work: Path, partition: int, offset: int, around: int = 3) -> list[str]:
    """Trace lines of every worker log that touch `partition` near `offset`, oldest worker first."""
    out = []
    for path in sorted(work.glob("worker-*.log"), key=lambda f: f.read_text(errors="replace")[:23]):
        hits = []
        for line in path.read_text(errors="replace").splitlines():
            m = re.search(r"TRACE (?:deliver|ack) p(\d+) (\d+)", line)
            c = re.search(r"TRACE commit \{(.*)\}", line)
            near = m is not None and int(m[1]) == partition and abs(int(m[2]) - offset) <= around
            if c:
                at = dict(re.findall(r"(\d+): (\d+)", c[1])).get(str(partition))
                near = at is not None and abs(int(at) - offset) <= around
            if near or "generation id" in line:
                hits.append(line[11:23] + " " + line[line.find("TRACE") if "TRACE" in line else 24 :])
        if any("TRACE" in h for h in hits):
            out += [f"== {path.name}", *hits]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=30, help="restarts (default 30)")
    ap.add_argument("--rate", type=float, default=40.0, help="input items per second (default 40)")
    ap.add_argument("--plain", action="store_true", help="a plain aiokafka consumer instead of finsent workers")
    ap.add_argument("--trace", action="store_true", help="workers log each delivery, ack and commit of the input")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="restart-probe-"))
    with open_broker("noida", work) as broker:
        topics = TopicNames()
        make_topics(broker.bootstrap, topics)
        if args.trace:
            (work / "trace").mkdir()
            (work / "trace" / "sitecustomize.py").write_text(TRACE.format(prefix=topics.news))
            os.environ["PYTHONPATH"] = os.pathsep.join(
                filter(None, [str(work / "trace"), os.environ.get("PYTHONPATH")])
            )
        seen: set[str] = set()
        worker = None if args.plain else WorkerProcess(broker, topics, make_bundle(work / "tiny"), work).start()
        with Paced(broker.bootstrap, topics.news, rate=args.rate) as paced:
            time.sleep(3)
            for c in range(args.cycles):
                if worker is None:
                    asyncio.run(plain_cycle(broker.bootstrap, topics.news, seen, 3.0))
                else:
                    worker.kill()
                    worker = WorkerProcess(broker, topics, worker.model, work, app_id=worker.app_id).start()
                    time.sleep(4)
                print(f"restart {c + 1} of {args.cycles}", flush=True)
            paced.stop()
        if worker is not None:
            time.sleep(10)
            worker.stop(timeout=60)  # SIGTERM: outputs still buffered are flushed first
            seen = set(on_topic(broker.bootstrap, topics.scored))
        else:
            asyncio.run(plain_cycle(broker.bootstrap, topics.news, seen, 5.0))
        at = on_topic(broker.bootstrap, topics.news)
        group = "probe" if worker is None else worker.app_id
        done = committed(broker.bootstrap, group, topics.news)
        runs = gaps(at, seen)
        lost = [(p, a, min(b, done[p] - 1)) for p, a, b in runs if a < done[p]]
        pending = sum(b - max(a, done[p]) + 1 for p, a, b in runs if b >= done[p])
        print(f"{len(at)} records on the input")
        print(f"lost (committed past, never handled): {sum(b - a + 1 for _, a, b in lost)} {lost}")
        print(f"pending (at or above the committed offsets {done}): {pending}")
        for p, a, _ in lost if args.trace else []:
            print("\n".join(trace_lines(work, p, a)))
        print(f"worker logs and broker data: {work}")


if __name__ == "__main__":
    main()
