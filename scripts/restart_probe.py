"""Restart a consumer again and again on the persistent broker while input flows; report records never read.

    .venv/bin/python scripts/restart_probe.py --cycles 30          # finsent workers, SIGKILLed and restarted
    .venv/bin/python scripts/restart_probe.py --cycles 40 --plain  # a plain aiokafka consumer, for comparison

A diagnostic, not a test: the loss it looks for is rare (about 1 restart in 30
on 2 cores), too rare for a CI test to catch without running for minutes. It
needs the dev dependencies (noida-db) and runs from the repository root.
"""

from __future__ import annotations

import argparse
import asyncio
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=30, help="restarts (default 30)")
    ap.add_argument("--rate", type=float, default=40.0, help="input items per second (default 40)")
    ap.add_argument("--plain", action="store_true", help="a plain aiokafka consumer instead of finsent workers")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="restart-probe-"))
    with open_broker("noida", work) as broker:
        topics = TopicNames()
        make_topics(broker.bootstrap, topics)
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
            seen = set(on_topic(broker.bootstrap, topics.scored))
            worker.stop()
        else:
            asyncio.run(plain_cycle(broker.bootstrap, topics.news, seen, 5.0))
        at = on_topic(broker.bootstrap, topics.news)
        runs = gaps(at, seen)
        print(f"{len(at)} records on the input, {sum(b - a + 1 for _, a, b in runs)} never handled: {runs}")
        print(f"worker logs and broker data: {work}")


if __name__ == "__main__":
    main()
