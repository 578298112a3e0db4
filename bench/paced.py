"""One worker under paced load: where the CPU goes and how the latency looks, rate by rate.

    .venv/bin/python -m bench.paced --rates 30,60
    .venv/bin/python -m bench.paced --rates 60 --worker-env FINSENT_MODEL__INTRA_OP_THREADS=2
    .venv/bin/python -m bench.paced --rates 60 --client kafka-python   # the old load generator
    .venv/bin/python -m bench.paced --broker-log info,warn --burst 3000 --rates 40,80 --rounds 2
    .venv/bin/python -m bench.paced --texts en,mixed,zh --burst 2000 --rates 40 --rounds 2
    .venv/bin/python -m bench.paced --texts zh --model models/finsent-minilm-l6,models/finsent-multilingual \
        --model OLD_BUNDLE --burst 2000 --rates 40 --rounds 2

Per rate: cores used by the embedded broker, the worker and this process (the load generator) while
producing, the worker's micro-batches (count, mean size, scoring ms per batch, from its own
Prometheus histograms), produce-to-scored latency quantiles and what the broker logged. With
`--burst N`, first N items as fast as possible: the sustained items/s, next to the worker's own
scoring call alone (batch 32, bucket 16, both cores) measured in the same run.

`--broker-log info,warn` repeats everything with a fresh broker (and worker) at each tansu log level,
in one run, so the levels are compared side by side on the same machine state; `--rounds 2` runs
the cases again in reverse order (info, warn, warn, info) so a drift in the machine's load does
not favour one of them. `--texts en,mixed,zh` does the same for what the worker reads: English
headlines, half English and half Chinese interleaved (the demo's zh.csv; each item routed by its
script to the bundle that serves its language, as in production), or Chinese only. Each `--model`
is one worker's bundles (comma-separated); repeated, the bundle sets are run side by side too.
Prints tables, writes JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.pipeline_bench import ScoredReader, broker_cpu, proc_stats, produce, quantiles
from bench.run import REPO, load_texts, table
from monitor.settings import DEFAULT_BUNDLE, DEFAULT_EXTRA_BUNDLES
from monitor.stream.broker import EmbeddedBroker, rust_log_filter
from monitor.testing import TopicNames, WorkerProcess, make_topics

HISTOGRAMS = ("finsent_batch_size", "finsent_scoring_seconds")
ZH_TEXTS = REPO / "monitor" / "data" / "demo" / "zh.csv"
MIXES = ("en", "mixed", "zh")


def load_mix(mix: str, n: int = 256) -> list[str]:
    """n texts: English headlines, Chinese items, or the two interleaved one for one."""
    from monitor.model.normalize import normalize_text

    with open(ZH_TEXTS, encoding="utf-8", newline="") as fh:
        zh = [normalize_text(r["text"]) for r in csv.DictReader(fh)][:n]
    en = load_texts(n)
    if mix == "en":
        return en
    if mix == "zh":
        return zh
    return [t for pair in zip(en[: n // 2], zh[: n // 2], strict=True) for t in pair]


LANG_LABEL = re.compile(r'lang="([^"]*)"')


def scrape(url: str) -> dict[str, float]:
    """The _sum and _count series of the worker's batch histograms, and items scored per language."""
    out: dict[str, float] = {}
    for line in urllib.request.urlopen(url, timeout=10).read().decode().splitlines():
        name = line.split(" ")[0]
        if name.startswith(HISTOGRAMS) and name.endswith(("_sum", "_count")):
            out[name] = float(line.split()[1])
        elif name.startswith("finsent_messages_total{") and (lang := LANG_LABEL.search(name)):
            key = f"lang:{lang.group(1)}"
            out[key] = out.get(key, 0.0) + float(line.split()[-1])
    return out


def run(rates: list[float], seconds: float, models: list[Path], env: dict[str, str], client: str,
        broker_log: str | None = None, burst: int = 0, mix: str = "en") -> list[dict[str, Any]]:  # fmt: skip
    """One broker at `broker_log` (None: its default) and one worker: the burst (if any), then each rate."""
    texts = load_mix(mix)
    rows: list[dict[str, Any]] = []
    with EmbeddedBroker(log_level=broker_log) as broker:
        topics = TopicNames()
        make_topics(broker.bootstrap, topics)
        more = [a for m in models[1:] for a in ("--model", str(m))]  # the worker serves every bundle given
        w = WorkerProcess(broker.bootstrap, topics, models[0], Path(tempfile.mkdtemp()), app_id="paced", env=env,
                          args=more).start()  # fmt: skip
        try:
            reader = ScoredReader(broker.bootstrap, topics.scored, 4)
            produce(broker.bootstrap, topics.news, texts, 64, None, "warm")
            while reader.n < 64:
                reader.drain()
            phases: list[float | None] = [None] if burst else []
            for rate in [*phases, *rates]:
                reader.lat_ms.clear()
                reader.n = 0
                n = burst if rate is None else max(20, int(rate * seconds))
                m0, b0, log0 = scrape(w.metrics_url), broker_cpu(broker), broker.log_bytes
                pid = w.proc.pid if w.proc else 0
                w0, g0, t0 = proc_stats(pid)["cpu_s"], time.process_time(), time.monotonic()
                produce(broker.bootstrap, topics.news, texts, n, rate, "burst" if rate is None else f"r{rate}", client)
                if rate is None:  # a burst lasts until the last item is scored
                    deadline = time.monotonic() + 600
                    while reader.n < n and time.monotonic() < deadline:
                        reader.drain()
                secs = time.monotonic() - t0
                b1, w1, g1, log1 = broker_cpu(broker), proc_stats(pid)["cpu_s"], time.process_time(), broker.log_bytes
                deadline = time.monotonic() + 120
                while reader.n < n and time.monotonic() < deadline:
                    reader.drain()
                d = {k: v - m0.get(k, 0.0) for k, v in scrape(w.metrics_url).items()}
                batches = d.get("finsent_batch_size_count", 0.0)
                rows.append({"broker_log": broker.log_level, "texts": mix, "bundles": bundle_label(models),
                             "rate": "burst" if rate is None else rate,
                             "items": n,
                             "scored": reader.n, "items_per_s": round(reader.n / secs, 1),
                             "broker_cores": round((b1 - b0) / secs, 2), "worker_cores": round((w1 - w0) / secs, 2),
                             "load_gen_cores": round((g1 - g0) / secs, 2),
                             "worker_cpu_ms_per_item": round(1000 * (w1 - w0) / max(1, reader.n), 2),
                             "log_mb_per_s": round((log1 - log0) / secs / 1e6, 2), "batches": int(batches),
                             "mean_batch": round(d.get("finsent_batch_size_sum", 0.0) / max(1.0, batches), 1),
                             "scoring_ms_per_batch": round(1000 * d.get("finsent_scoring_seconds_sum", 0.0)
                                                           / max(1.0, batches), 1),
                             "langs": {k[5:]: int(v) for k, v in sorted(d.items()) if k.startswith("lang:") and v},
                             **quantiles(reader.lat_ms)})  # fmt: skip
            reader.c.close()
        finally:
            w.stop()
    for r in rows:  # the whole life of this broker, start to stop, in every row of it
        r["log_bytes_total"] = broker.log_bytes
    return rows


def scorer_alone(model: Path) -> float:
    """texts/s of the worker's scoring call alone, batch 32, bucket 16, onnxruntime's default threads."""
    from bench.model_bench import run_serving_bench

    s = run_serving_bench(load_texts(256), model, [32], [16], 5)
    return float(s["rows"][0]["texts_per_s"])


def bundle_label(models: list[Path]) -> str:
    return "+".join(m.name for m in models)


def summarise(rows: list[dict[str, Any]], cases: list[tuple[str, str, str]],
              alone: float | None) -> list[dict[str, Any]]:  # fmt: skip
    """Per case (broker log level, texts, bundles) and phase: the median over rounds; an English burst
    on the first bundle set also against the scorer alone (which times English texts on its first bundle)."""
    out = []
    phases = list(dict.fromkeys(r["rate"] for r in rows))
    for level, mix, bundles in cases:
        for phase in phases:
            mine = [r for r in rows
                    if (r["broker_log"], r["texts"], r["bundles"]) == (level, mix, bundles) and r["rate"] == phase]  # fmt: skip
            if not mine:
                continue
            keys = ["items_per_s", "broker_cores", "worker_cores", "load_gen_cores", "worker_cpu_ms_per_item",
                    "log_mb_per_s", "mean_batch", "p50", "p95", "p99"]  # fmt: skip
            s: dict[str, Any] = {"broker_log": level, "texts": mix, "bundles": bundles, "rate": phase,
                                 "runs": len(mine)}  # fmt: skip
            for k in keys:
                vals = [r[k] for r in mine if k in r]
                if vals:
                    s[k] = round(statistics.median(vals), 2)
            if phase == "burst" and alone and mix == "en" and bundles == cases[0][2]:
                s["vs_scorer_alone"] = round(s["items_per_s"] / alone, 2)
            out.append(s)
    return out


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="30,60", help="items/s, comma-separated (default 30,60)")
    ap.add_argument("--seconds", type=float, default=15.0, help="produce for this long at each rate")
    ap.add_argument("--model", action="append", metavar="DIRS",
                    help="the bundles one worker serves, comma-separated (default: the shipped bundles, English "
                         "first, as the worker's own default); repeat to run bundle sets side by side")  # fmt: skip
    ap.add_argument("--worker-env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra environment for the worker, e.g. FINSENT_MODEL__MAX_WAIT_MS=5 (repeatable)")  # fmt: skip
    ap.add_argument("--client", choices=["aiokafka", "kafka-python"], default="aiokafka", help="load generator")
    ap.add_argument("--broker-log", default=None, metavar="LEVELS",
                    help="tansu log level(s), comma-separated, each run side by side (default: warn, "
                         "or FINSENT_BROKER_LOG)")  # fmt: skip
    ap.add_argument("--texts", default="en", metavar="MIXES",
                    help="what the worker reads, comma-separated, each run side by side: en (English headlines), "
                         "mixed (half Chinese, interleaved), zh (default en)")  # fmt: skip
    ap.add_argument("--burst", type=int, default=0, metavar="N", help="first N items as fast as possible (items/s)")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the cases, every other round in reverse order")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "paced.json")
    return ap


Case = tuple[str | None, str, str]  # broker log level, texts, bundle set label


def cases(a: argparse.Namespace, ap: argparse.ArgumentParser) -> tuple[list[Case], dict[str, list[Path]]]:
    """Every broker log level x input mix x bundle set, and the bundle sets by label; bad values: one line."""
    levels: list[str | None] = [None]
    if a.broker_log:
        levels = [lv.strip() for lv in a.broker_log.split(",") if lv.strip()]
        try:
            for lv in levels:
                rust_log_filter(lv)
        except ValueError as exc:
            ap.error(f"--broker-log: {exc}")
    mixes = [m.strip() for m in a.texts.split(",") if m.strip()]
    if not mixes or any(m not in MIXES for m in mixes):
        ap.error(f"--texts takes {', '.join(MIXES)} (comma-separated), got {a.texts!r}")
    sets = [[Path(d.strip()) for d in spec.split(",") if d.strip()] for spec in a.model or []]
    sets = sets or [[DEFAULT_BUNDLE, *DEFAULT_EXTRA_BUNDLES]]
    missing = [str(d) for bundles in sets for d in bundles if not (d / "manifest.json").is_file()]
    if missing or not all(sets):
        ap.error(f"--model: no bundle at {', '.join(missing) or 'an empty list'}")
    by_label = {bundle_label(b): b for b in sets}
    return [(lv, m, label) for lv in levels for m in mixes for label in by_label], by_label


ROW_COLUMNS = ["round", "broker_log", "texts", "bundles", "rate", "scored", "items_per_s", "broker_cores",
               "worker_cores", "load_gen_cores", "log_mb_per_s", "mean_batch", "scoring_ms_per_batch", "p50", "p95",
               "p99"]  # fmt: skip
SUMMARY_COLUMNS = ["broker_log", "texts", "bundles", "rate", "items_per_s", "vs_scorer_alone", "worker_cpu_ms_per_item",
                   "broker_cores", "worker_cores", "load_gen_cores", "log_mb_per_s", "p50", "p99"]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    a = ap.parse_args(argv)
    try:
        rates = [float(r) for r in a.rates.split(",") if r.strip()]
        env = dict(kv.split("=", 1) for kv in a.worker_env)
    except ValueError:
        ap.error("--rates takes numbers like 30,60 and --worker-env takes KEY=VALUE")
    if not rates or min(rates) <= 0:
        ap.error("--rates needs at least one positive rate")
    todo, by_label = cases(a, ap)
    if a.burst < 0 or a.rounds < 1:
        ap.error("--burst takes N >= 0 and --rounds N >= 1")
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    alone = scorer_alone(next(iter(by_label.values()))[0]) if a.burst else None
    rows: list[dict[str, Any]] = []
    for rnd in range(a.rounds):
        for level, mix, label in todo if rnd % 2 == 0 else todo[::-1]:
            rows += [{"round": rnd + 1, **r}
                     for r in run(rates, a.seconds, by_label[label], env, a.client, level, a.burst, mix)]  # fmt: skip
    print(table(rows, ROW_COLUMNS))
    result: dict[str, Any] = {"started": started, "client": a.client, "worker_env": env, "seconds": a.seconds,
                              "rows": rows}  # fmt: skip
    ran = list(dict.fromkeys((r["broker_log"], r["texts"], r["bundles"]) for r in rows))
    if alone is not None or len(ran) > 1 or a.rounds > 1:
        result["scorer_alone_texts_per_s"] = alone
        result["summary"] = summarise(rows, ran, alone)
        print(f"\nmedian over {a.rounds} round(s); worker's scoring call alone (batch 32, bucket 16): {alone} texts/s")
        print(table(result["summary"], SUMMARY_COLUMNS))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
