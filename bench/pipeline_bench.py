"""The worker end to end on the embedded broker: sustained throughput, latency at fractions of it, scale-out."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from bench.profile import Profiler
from monitor.stream.broker import EmbeddedBroker
from monitor.testing import TopicNames, WorkerProcess, make_topics


def proc_stats(pid: int) -> dict[str, float]:
    with open(f"/proc/{pid}/stat") as fh:
        f = fh.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    rss = 0
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    return {"cpu_s": (int(f[11]) + int(f[12])) / ticks, "rss_mb": rss / 1e6}


def broker_cpu(broker: EmbeddedBroker) -> float:
    return proc_stats(broker.pid)["cpu_s"] if broker.pid else 0.0


class ScoredReader:
    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self.c = KafkaConsumer(bootstrap_servers=[bootstrap], enable_auto_commit=False, group_id=None)
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        self.c.assign(tps)
        self.c.seek_to_beginning(*tps)
        self.lat_ms: list[float] = []
        self.n = 0

    def drain(self, timeout_s: float = 0.2) -> int:
        got = 0
        for recs in self.c.poll(timeout_ms=int(timeout_s * 1000), max_records=5000).values():
            for r in recs:
                v = json.loads(r.value)
                self.lat_ms.append(r.timestamp - int(v["published_at"]))
                got += 1
        self.n += got
        return got


def _item(texts: list[str], i: int, prefix: str) -> tuple[bytes, bytes]:
    """Key and value of item i, `published_at` stamped now (latency is measured from it)."""
    msg = {"id": f"{prefix}-{i}", "text": texts[i % len(texts)], "published_at": int(time.time() * 1000)}
    return msg["id"].encode(), json.dumps(msg).encode()


def produce(bootstrap: str, topic: str, texts: list[str], n: int, rate: float | None, prefix: str,
            client: str = "aiokafka") -> float:  # fmt: skip
    """n items, as fast as possible (rate None) or paced; published_at is stamped at send time.

    Paced load goes through aiokafka unless `client="kafka-python"` (kept to show the difference)."""
    if rate and client == "aiokafka":
        return asyncio.run(_produce_paced(bootstrap, topic, texts, n, rate, prefix))
    p = KafkaProducer(bootstrap_servers=[bootstrap], linger_ms=5, acks=1)
    t0 = time.monotonic()
    for i in range(n):
        if rate:
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        key, value = _item(texts, i, prefix)
        p.send(topic, key=key, value=value)
    p.flush()
    p.close()
    return time.monotonic() - t0


async def _produce_paced(bootstrap: str, topic: str, texts: list[str], n: int, rate: float, prefix: str) -> float:
    """Paced load from aiokafka: kafka-python's sender thread used up to a whole core at 60 items/s
    while the worker and broker competed for the CPU (measured), which the latency then included."""
    from aiokafka import AIOKafkaProducer

    p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks=1, enable_idempotence=False)
    await p.start()
    try:
        t0 = time.monotonic()
        for i in range(n):
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            key, value = _item(texts, i, prefix)
            await p.send(topic, key=key, value=value)
        await p.flush()
        return time.monotonic() - t0
    finally:
        await p.stop()


def quantiles(xs: list[float]) -> dict[str, float]:
    s = sorted(xs)
    if not s:
        return {}
    return {f"p{q}": round(s[min(len(s) - 1, int(q / 100 * (len(s) - 1)))], 1) for q in (50, 95, 99)}


def run_pipeline_bench(texts: list[str], model: Path, n: int, fractions: list[float], workers: list[int],
                       batch_size: int = 32, profile_to: Path | None = None,
                       broker_log: str | None = None) -> dict[str, Any]:  # fmt: skip
    """`broker_log`: tansu's log level (None: warn or FINSENT_BROKER_LOG); at info it takes CPU from the rest."""
    out: dict[str, Any] = {"items": n, "batch_size": batch_size, "sustained": {}, "latency": [], "scale_out": [],
                           "overlap_off": {}}  # fmt: skip
    work = Path(tempfile.mkdtemp())
    with EmbeddedBroker(log_level=broker_log) as broker:
        out["broker_log"] = broker.log_level
        base_env = {"FINSENT_MODEL__BATCH_SIZE": str(batch_size)}
        # The worker as shipped (scoring overlapped with writing) at each scale, then one worker
        # scoring and writing strictly one batch at a time, for the side-by-side ratio.
        configs = [(count, True) for count in workers] + [(workers[0], False)]
        for i_cfg, (count, overlap) in enumerate(configs):
            env = {**base_env, "FINSENT_WORKER__OVERLAP_IO": str(overlap).lower()}
            topics = TopicNames()
            make_topics(broker.bootstrap, topics)
            app = f"bench-{topics.suffix}"
            ws = [WorkerProcess(broker.bootstrap, topics, model, work / f"w{i_cfg}-{i}", app_id=app, env=env).start()
                  for i in range(count)]  # fmt: skip
            try:
                reader = ScoredReader(broker.bootstrap, topics.scored, 4)
                # Warm up so group joins and model caches are settled.
                produce(broker.bootstrap, topics.news, texts, 64, None, "warm")
                while reader.n < 64:
                    reader.drain()
                reader.lat_ms.clear()
                reader.n = 0
                before = [proc_stats(w.proc.pid) for w in ws if w.proc]
                broker_before, bench_before = broker_cpu(broker), time.process_time()
                # py-spy on the first (shipped-configuration, one-worker) burst: where the time goes.
                prof = Profiler(ws[0].proc.pid, profile_to) if profile_to and i_cfg == 0 and ws[0].proc else None
                if prof:
                    prof.start()
                t0 = time.monotonic()
                produce(broker.bootstrap, topics.news, texts, n, None, "burst")
                deadline = t0 + 600
                while reader.n < n and time.monotonic() < deadline:
                    reader.drain()
                secs = time.monotonic() - t0
                after = [proc_stats(w.proc.pid) for w in ws if w.proc]
                broker_cores = (broker_cpu(broker) - broker_before) / secs
                bench_cores = (time.process_time() - bench_before) / secs
                if prof:
                    out["profile"] = prof.stop()
                rate = reader.n / secs
                row = {"workers": count, "overlap_io": overlap, "items_per_s": round(rate, 1), "seconds": round(secs, 1),
                       "worker_cpu_s": round(sum(a["cpu_s"] - b["cpu_s"] for a, b in zip(after, before, strict=True)), 1),
                       "worker_rss_mb": round(sum(a["rss_mb"] for a in after), 1),
                       "broker_cores": round(broker_cores, 2), "load_gen_cores": round(bench_cores, 2),
                       "broker_log_mb": round(broker.log_bytes / 1e6, 1)}  # fmt: skip
                row["worker_cores"] = round(row["worker_cpu_s"] / secs, 2)
                row["worker_cpu_ms_per_item"] = round(row["worker_cpu_s"] / max(1, reader.n) * 1000, 2)
                if not overlap:
                    out["overlap_off"] = row
                    reader.c.close()
                    continue
                out["scale_out"].append(row)
                if i_cfg == 0:
                    out["sustained"] = row
                    for frac in fractions:
                        reader.lat_ms.clear()
                        reader.n = 0
                        m = max(50, int(rate * frac * 10))
                        produce(broker.bootstrap, topics.news, texts, m, rate * frac, f"lat{frac}")
                        deadline = time.monotonic() + 120
                        while reader.n < m and time.monotonic() < deadline:
                            reader.drain()
                        out["latency"].append({"fraction": frac, "rate": round(rate * frac, 1), "items": m,
                                               **quantiles(reader.lat_ms)})  # fmt: skip
                reader.c.close()
            finally:
                for w in ws:
                    w.stop()
    return out
