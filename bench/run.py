"""finsent benchmark harness: prints a table and writes JSON.

    .venv/bin/python -m bench.run                 # full run (~10 min on 2 cores)
    .venv/bin/python -m bench.run --smoke         # seconds; what CI runs to keep this working

Every number in one run comes from the same machine state, so compare
rows as ratios within a run, not across runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TEXTS = REPO / "monitor" / "data" / "demo" / "headlines.csv"


def load_texts(n: int) -> list[str]:
    from monitor.normalize import normalize_text

    with open(TEXTS, encoding="utf-8", newline="") as fh:
        return [normalize_text(r["text"]) for r in csv.DictReader(fh)][:n]


def table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(cols, widths, strict=True)) for r in rows]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.run", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, to keep the harness working in CI")
    ap.add_argument("--run", type=Path, default=REPO / "runs" / "minilm-l6", help="trained run dir (torch baseline)")
    ap.add_argument("--model", type=Path, default=REPO / "models" / "finsent-minilm-l6", help="bundle for the worker")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "latest.json")
    ap.add_argument("--skip-model", action="store_true")
    ap.add_argument("--skip-pipeline", action="store_true")
    args = ap.parse_args(argv)
    result: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": platform.platform(),
                              "python": platform.python_version(), "smoke": args.smoke}  # fmt: skip
    texts = load_texts(256 if not args.smoke else 64)
    if not args.skip_model:
        from bench.model_bench import run_model_bench

        sizes = [1, 8, 32] if args.smoke else [1, 8, 32, 128]
        m = run_model_bench(texts, sizes, 3 if args.smoke else 30, args.run)
        result["model"] = m
        print(f"\n== model alone ({m['source']}; avg {m['avg_tokens']} tokens/text)")
        print(table(m["rows"], ["batch", "path", "texts_per_s", "p50_ms", "p99_ms", "tokenise_ms"]))
        print(f"INT8 argmax agreement with torch: {m['int8_argmax_agreement_vs_torch']}")
        print(f"ceiling: GEMM {m['gemm_gflops']} GFLOP/s / {m['flops_per_item_mflop']} MFLOP per item "
              f"= {m['ceiling_items_per_s']} items/s")  # fmt: skip
        for r in m["rows"]:
            r["fraction_of_ceiling"] = round(r["texts_per_s"] / m["ceiling_items_per_s"], 3)
    if not args.skip_pipeline:
        from bench.pipeline_bench import run_pipeline_bench

        if not (args.model / "manifest.json").is_file():
            print(f"no bundle at {args.model}: pipeline bench skipped", file=sys.stderr)
        else:
            p = run_pipeline_bench(texts, args.model, 200 if args.smoke else 3000,
                                   [0.5] if args.smoke else [0.25, 0.5, 0.9], [1] if args.smoke else [1, 2])  # fmt: skip
            result["pipeline"] = p
            print("\n== worker end to end (embedded broker)")
            rows = [*p["scale_out"], p["overlap_off"]] if p["overlap_off"] else p["scale_out"]
            print(table(rows, ["workers", "overlap_io", "items_per_s", "seconds", "worker_cpu_s", "worker_rss_mb"]))
            if p["overlap_off"] and p["sustained"]:
                p["overlap_speedup"] = round(p["sustained"]["items_per_s"] / p["overlap_off"]["items_per_s"], 2)
                print(f"overlapped scoring/writing vs one batch at a time: {p['overlap_speedup']}x")
            if "model" in result:
                int8 = [
                    r for r in result["model"]["rows"] if r.get("path") == "onnxruntime int8" and r.get("batch") == 32
                ]
                if int8 and p["sustained"]:
                    p["fraction_of_model_alone_int8_b32"] = round(
                        p["sustained"]["items_per_s"] / int8[0]["texts_per_s"], 3
                    )
                    print(f"worker end to end / model alone (INT8, batch 32): {p['fraction_of_model_alone_int8_b32']}")
            print(table(p["latency"], ["fraction", "rate", "items", "p50", "p95", "p99"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
