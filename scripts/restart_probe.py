"""Restart a consumer again and again on the persistent broker while input flows; report records never read.

    .venv/bin/python scripts/restart_probe.py --cycles 30          # finsent workers, SIGKILLed and restarted
    .venv/bin/python scripts/restart_probe.py --cycles 40 --plain  # a plain aiokafka consumer, for comparison

A diagnostic, not a test: the loss it looks for is rare (about 1 restart in 30
on 2 cores), too rare for a CI test to catch without running for minutes. It
needs the dev dependencies (noida-db) and runs from the repository root.

A record the consumer group has committed past without handling is lost; one at
or above the committed offset is only pending (a restart reads it). `--trace`
makes every worker log each delivery, queueing, take, ack, seek and commit of the
input partitions (through a `sitecustomize` module the probe writes into its work
directory), prints the lines around each lost record, and counts near misses: a
commit past a record the same worker was handed and never acked (a loss unless an
earlier worker had scored it). `--race S` makes the rarest known timing common:
each worker's recovery ends the moment a fetched input record waits in a stream
queue (monitor.testing.RESUME_RACE_HOOK).

    .venv/bin/python scripts/restart_probe.py --cycles 300 --trace   # ~27 min on 2 cores
    .venv/bin/python scripts/restart_probe.py --cycles 15 --race 2 --trace
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

from monitor.testing import RESUME_RACE_HOOK, TopicNames, WorkerProcess, hook_env, make_topics, open_broker
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
    wait0, seek0, gap0 = Consumer._wait_next_records, Consumer.seek, Consumer._add_gap

    @functools.wraps(wait0)
    async def wait_next_records(self, timeout):
        records, active = await wait0(self, timeout)
        for tp, rs in (records or {{}}).items():
            if tp.topic.startswith("{prefix}") and rs:
                log.info("TRACE fetched p%d %d-%d gen %s active %s flow %s", tp.partition, rs[0].offset,
                         rs[-1].offset, self.app.consumer_generation_id, active is None or tp in active,
                         self.flow_active)
        return records, active

    async def seek(self, tp, offset):
        if tp.topic.startswith("{prefix}"):
            log.info("TRACE seek p%d %d gen %s", tp.partition, offset, self.app.consumer_generation_id)
        return await seek0(self, tp, offset)

    async def add_gap(self, tp, offset_from, offset_to):
        if tp.topic.startswith("{prefix}"):
            log.info("TRACE gap p%d %d %d committed %s", tp.partition, offset_from, offset_to,
                     self._committed_offset[tp])
        return await gap0(self, tp, offset_from, offset_to)

    Consumer._wait_next_records, Consumer.seek, Consumer._add_gap = wait_next_records, seek, add_gap
    revoked0, assigned0 = Consumer.on_partitions_revoked, Consumer.on_partitions_assigned

    async def on_partitions_revoked(self, revoked):
        log.info("TRACE revoked gen %s", self.app.consumer_generation_id)
        return await revoked0(self, revoked)

    async def on_partitions_assigned(self, assigned, generation_id=0):
        log.info("TRACE assigned gen %s %s", generation_id, sorted(
            tp.partition for tp in assigned if tp.topic.startswith("{prefix}")))
        return await assigned0(self, assigned, generation_id)

    Consumer.on_partitions_revoked, Consumer.on_partitions_assigned = on_partitions_revoked, on_partitions_assigned

    # Where a delivered record can still vanish: the handler that queues it for the streams,
    # Faust's own "skipping"/"dropped" debug lines, and the batches the scoring agent takes.
    from faust.streams import Stream
    from faust.transport.conductor import Conductor
    import mode.utils.logging as mode_logging

    compile0, take0, dev0 = Conductor._compile_message_handler, Stream.take_events, mode_logging.LogSeverityMixin.dev

    def compile_message_handler(self):
        inner = compile0(self)

        async def on_message(message):
            mine = message.topic.startswith("{prefix}")
            try:
                result = await inner(message)
            except BaseException as exc:
                if mine:
                    log.info("TRACE queued p%d %d raised %r", message.partition, message.offset, exc)
                raise
            if mine:
                log.info("TRACE queued p%d %d", message.partition, message.offset)
            return result

        return on_message

    async def take_events(self, max_, within):
        batches = take0(self, max_, within)
        try:
            async for batch in batches:
                for e in batch:
                    if e.message.topic.startswith("{prefix}"):
                        log.info("TRACE taken p%d %d", e.message.partition, e.message.offset)
                yield batch
        finally:
            await batches.aclose()

    def dev(self, message, *args, **kwargs):
        if isinstance(message, str) and message.startswith(("Skipping message", "DROPPED MESSAGE")):
            log.info("TRACE faust %s", (message % args)[:300])
        return dev0(self, message, *args, **kwargs)

    Conductor._compile_message_handler, Stream.take_events = compile_message_handler, take_events
    mode_logging.LogSeverityMixin.dev = dev
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
    """Trace lines of every worker log that touch `partition` near `offset`, oldest worker first.

    With each such worker's rebalances, recovery end and Faust's own "skipping"/"dropped" lines.
    """
    context = ("generation id", "TRACE revoked", "TRACE assigned", "TRACE faust", "Worker ready")
    out = []
    for path in sorted(work.glob("worker-*.log"), key=lambda f: f.read_text(errors="replace")[:23]):
        hits, touched = [], False
        for line in path.read_text(errors="replace").splitlines():
            near = False
            if m := re.search(r"TRACE (?:deliver|ack|seek|gap|queued|taken) p(\d+) (\d+)", line):
                near = int(m[1]) == partition and abs(int(m[2]) - offset) <= around
            elif f := re.search(r"TRACE fetched p(\d+) (\d+)-(\d+)", line):
                near = int(f[1]) == partition and int(f[2]) - around <= offset <= int(f[3]) + around
            elif c := re.search(r"TRACE commit \{(.*)\}", line):
                at = dict(re.findall(r"(\d+): (\d+)", c[1])).get(str(partition))
                near = at is not None and abs(int(at) - offset) <= around
            touched = touched or near
            if near or any(k in line for k in context):
                hits.append(line[11:23] + " " + line[line.find("TRACE") if "TRACE" in line else 24 :])
        if touched:
            out += [f"== {path.name}", *hits]
    return out


def near_misses(work: Path) -> list[str]:
    """Commits past an input record that the same worker was handed (delivered) and never acked.

    A log file can hold several workers (a later one got the same metrics port): each starts afresh.
    """
    out = []
    for path in sorted(work.glob("worker-*.log")):
        first: dict[int, int] = {}
        acked: dict[int, set[int]] = {}
        for line in path.read_text(errors="replace").splitlines():
            if "[^Worker]: Starting" in line:
                first, acked = {}, {}
            elif m := re.search(r"TRACE deliver p(\d+) (\d+)", line):
                first.setdefault(int(m[1]), int(m[2]))
            elif m := re.search(r"TRACE ack p(\d+) (\d+) True", line):
                acked.setdefault(int(m[1]), set()).add(int(m[2]))
            elif m := re.search(r"TRACE gap p(\d+) (\d+) (\d+)", line):
                acked.setdefault(int(m[1]), set()).update(range(int(m[2]), int(m[3]) + 1))
            elif m := re.search(r"TRACE commit \{(.*)\}", line):
                for p, o in ((int(p), int(o)) for p, o in re.findall(r"(\d+): (\d+)", m[1])):
                    missing = [x for x in range(first.get(p, o), o) if x not in acked.get(p, set())]
                    if missing:
                        out.append(f"{path.name} {line[11:23]}: commit p{p} {o} past {missing[:5]}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=30, help="restarts (default 30)")
    ap.add_argument("--rate", type=float, default=40.0, help="input items per second (default 40)")
    ap.add_argument("--plain", action="store_true", help="a plain aiokafka consumer instead of finsent workers")
    ap.add_argument(
        "--trace",
        action="store_true",
        help="workers log each fetch, delivery, queueing, take, ack, seek and commit of the input; count near misses",
    )
    ap.add_argument(
        "--race", type=float, default=0.0, metavar="S",
        help="end each worker's recovery the moment a fetched input record waits in a stream queue (waiting at "
        "most S s): the timing that lost a record about once in 600 restarts, made common",
    )  # fmt: skip
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="restart-probe-"))
    with open_broker("noida", work) as broker:
        topics = TopicNames()
        make_topics(broker.bootstrap, topics)
        hooks = [TRACE.format(prefix=topics.news)] if args.trace else []
        hooks += [RESUME_RACE_HOOK.format(topics=[topics.news], seconds=args.race)] if args.race else []
        if hooks:
            os.environ.update(hook_env(work / "hooks", *hooks))
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
        if args.trace:
            misses = near_misses(work)
            print(f"commits past a record the same worker was handed and never acked: {len(misses)}")
            print("\n".join(misses[:20]))
        print(f"worker logs and broker data: {work}")


if __name__ == "__main__":
    main()
