"""One worker under paced load: where the CPU goes and how the latency looks, rate by rate.

    .venv/bin/python -m bench.paced --rates 30,60
    .venv/bin/python -m bench.paced --rates 60 --worker-env FINSENT_MODEL__INTRA_OP_THREADS=2
    .venv/bin/python -m bench.paced --rates 60 --client kafka-python   # the old load generator

Per rate: cores used by the embedded broker, the worker and this process (the load generator) while
producing, the worker's micro-batches (count, mean size, scoring ms per batch, from its own
Prometheus histograms) and produce-to-scored latency quantiles. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.pipeline_bench import ScoredReader, broker_cpu, proc_stats, produce, quantiles
from bench.run import REPO, load_texts, table
from monitor.broker import EmbeddedBroker
from tests.worker_harness import TopicNames, WorkerProcess, make_topics

HISTOGRAMS = ("finsent_batch_size", "finsent_scoring_seconds")


def scrape(url: str) -> dict[str, float]:
    """The _sum and _count series of the worker's batch histograms."""
    out = {}
    for line in urllib.request.urlopen(url, timeout=10).read().decode().splitlines():
        name = line.split(" ")[0]
        if name.startswith(HISTOGRAMS) and name.endswith(("_sum", "_count")):
            out[name] = float(line.split()[1])
    return out


def run(rates: list[float], seconds: float, model: Path, env: dict[str, str], client: str) -> list[dict[str, Any]]:
    texts = load_texts(256)
    rows = []
    with EmbeddedBroker() as broker:
        topics = TopicNames()
        make_topics(broker.bootstrap, topics)
        w = WorkerProcess(broker.bootstrap, topics, model, Path(tempfile.mkdtemp()), app_id="paced", env=env).start()
        try:
            reader = ScoredReader(broker.bootstrap, topics.scored, 4)
            produce(broker.bootstrap, topics.news, texts, 64, None, "warm")
            while reader.n < 64:
                reader.drain()
            for rate in rates:
                reader.lat_ms.clear()
                reader.n = 0
                n = max(20, int(rate * seconds))
                m0, b0 = scrape(w.metrics_url), broker_cpu(broker)
                pid = w.proc.pid if w.proc else 0
                w0, g0, t0 = proc_stats(pid)["cpu_s"], time.process_time(), time.monotonic()
                produce(broker.bootstrap, topics.news, texts, n, rate, f"r{rate}", client)
                secs = time.monotonic() - t0
                b1, w1, g1 = broker_cpu(broker), proc_stats(pid)["cpu_s"], time.process_time()
                deadline = time.monotonic() + 120
                while reader.n < n and time.monotonic() < deadline:
                    reader.drain()
                d = {k: v - m0.get(k, 0.0) for k, v in scrape(w.metrics_url).items()}
                batches = d.get("finsent_batch_size_count", 0.0)
                rows.append({"rate": rate, "items": n, "scored": reader.n,
                             "broker_cores": round((b1 - b0) / secs, 2), "worker_cores": round((w1 - w0) / secs, 2),
                             "load_gen_cores": round((g1 - g0) / secs, 2), "batches": int(batches),
                             "mean_batch": round(d.get("finsent_batch_size_sum", 0.0) / max(1.0, batches), 1),
                             "scoring_ms_per_batch": round(1000 * d.get("finsent_scoring_seconds_sum", 0.0)
                                                           / max(1.0, batches), 1),
                             **quantiles(reader.lat_ms)})  # fmt: skip
            reader.c.close()
        finally:
            w.stop()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="30,60", help="items/s, comma-separated (default 30,60)")
    ap.add_argument("--seconds", type=float, default=15.0, help="produce for this long at each rate")
    ap.add_argument(
        "--model", type=Path, default=REPO / "models" / "finsent-minilm-l6", help="bundle the worker serves"
    )
    ap.add_argument("--worker-env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra environment for the worker, e.g. FINSENT_MODEL__MAX_WAIT_MS=5 (repeatable)")  # fmt: skip
    ap.add_argument("--client", choices=["aiokafka", "kafka-python"], default="aiokafka", help="load generator")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "paced.json")
    a = ap.parse_args(argv)
    try:
        rates = [float(r) for r in a.rates.split(",") if r.strip()]
        env = dict(kv.split("=", 1) for kv in a.worker_env)
    except ValueError:
        ap.error("--rates takes numbers like 30,60 and --worker-env takes KEY=VALUE")
    if not rates or min(rates) <= 0:
        ap.error("--rates needs at least one positive rate")
    rows = run(rates, a.seconds, a.model, env, a.client)
    print(table(rows, ["rate", "scored", "broker_cores", "worker_cores", "load_gen_cores", "batches", "mean_batch",
                       "scoring_ms_per_batch", "p50", "p95", "p99"]))  # fmt: skip
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"client": a.client, "worker_env": env, "rows": rows}, indent=2))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
