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
import logging
import platform
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TEXTS = REPO / "monitor" / "data" / "demo" / "headlines.csv"


def load_texts(n: int) -> list[str]:
    from monitor.model.normalize import normalize_text

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
    ap.add_argument("--broker-log", default=None, metavar="LEVEL",
                    help="embedded broker's log level (default warn, or FINSENT_BROKER_LOG); "
                         "`python -m bench.paced --broker-log info,warn` compares levels side by side")  # fmt: skip
    args = ap.parse_args(argv)
    if args.broker_log:
        from monitor.stream.broker import rust_log_filter

        try:
            rust_log_filter(args.broker_log)  # now, not after ten minutes of model benchmarks
        except ValueError as exc:
            ap.error(f"--broker-log: {exc}")
    # The ONNX quantiser switches the root logger to INFO; keep the Kafka clients' chatter out of the tables.
    for name in ("kafka", "aiokafka"):
        logging.getLogger(name).setLevel(logging.WARNING)
    result: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": platform.platform(),
                              "python": platform.python_version(), "smoke": args.smoke}  # fmt: skip
    # Timing on the first texts; SmoothQuant calibration and INT8 agreement each on texts of their own.
    n_time, n_calib, n_agree = (64, 64, 128) if args.smoke else (256, 512, 2000)
    pool = load_texts(n_time + n_calib + n_agree)
    texts, calib, agree = pool[:n_time], pool[n_time : n_time + n_calib], pool[n_time + n_calib :]
    if not args.skip_model:
        from bench.model_bench import INT8_DYN, INT8_SMOOTH, INT8_SMOOTH_ALL, INT8_WO, TWO_MODELS, run_model_bench

        sizes = [1, 8, 32] if args.smoke else [1, 8, 32, 128]
        m = run_model_bench(texts, sizes, 3 if args.smoke else 30, args.run, calib, agree)
        result["model"] = m
        print(f"\n== model alone ({m['source']}; avg {m['avg_tokens']} tokens/text)")
        print(table(m["rows"], ["batch", "path", "texts_per_s", "p50_ms", "p99_ms", "cpu_ms_per_text", "tokenise_ms"]))
        agreement = m["int8_argmax_agreement_vs_torch"]
        for name, a in agreement.items():
            if name != "texts":
                print(f"argmax agreement with torch on {agreement['texts']} other texts, {name}: {a}")
        print(f"ceiling: GEMM {m['gemm_gflops']} GFLOP/s / {m['flops_per_item_mflop']} MFLOP per item "
              f"= {m['ceiling_items_per_s']} items/s (fp32); INT8 MatMulInteger {m['int8_gemm_gops']} GOP/s "
              f"= {m['int8_ceiling_items_per_s']} items/s (dynamic INT8)")  # fmt: skip
        for r in m["rows"]:
            # Dynamic INT8 (int8 activations) against the INT8 GEMM rate; weight-only INT8 computes in fp32.
            int8_compute = "dynamic" in r["path"] or "d-s" in r["path"]
            ceiling = m["int8_ceiling_items_per_s"] if int8_compute else m["ceiling_items_per_s"]
            r["fraction_of_ceiling"] = round(r["texts_per_s"] / ceiling, 3)
        by = {(r["batch"], r["path"]): r["texts_per_s"] for r in m["rows"]}
        ratios = {}
        for bs in sizes:
            torch_tps = by.get((bs, "torch fp32"))
            int8_tps = by.get((bs, INT8_WO))
            dyn_tps = by.get((bs, INT8_DYN))
            smooth_tps = by.get((bs, INT8_SMOOTH))
            smooth_all_tps = by.get((bs, INT8_SMOOTH_ALL))
            two = by.get((bs, TWO_MODELS))
            ratios[bs] = {"ort_fp32_vs_torch": round(by[(bs, "onnxruntime fp32")] / torch_tps, 2) if torch_tps else None,
                          "int8_wo_vs_torch": round(int8_tps / torch_tps, 2) if torch_tps and int8_tps else None,
                          "int8_dyn_vs_torch": round(dyn_tps / torch_tps, 2) if torch_tps and dyn_tps else None,
                          "int8_smooth_vs_torch": round(smooth_tps / torch_tps, 2) if torch_tps and smooth_tps else None,
                          "smooth_all_vs_torch": round(smooth_all_tps / torch_tps, 2) if torch_tps and smooth_all_tps
                          else None,
                          "one_pass_vs_two_models": round(smooth_tps / two, 2) if two and smooth_tps else None}  # fmt: skip
        m["ratios"] = ratios
        print(table([{"batch": bs, **r} for bs, r in ratios.items()],
                    ["batch", "ort_fp32_vs_torch", "int8_wo_vs_torch", "int8_dyn_vs_torch", "int8_smooth_vs_torch",
                     "smooth_all_vs_torch", "one_pass_vs_two_models"]))  # fmt: skip
        print(table(m["rows"], ["batch", "path", "fraction_of_ceiling"]))
        for d in m["denormals"].values():
            d["gain"] = round(d["flushed"] / d["kept"], 2)
        print("denormals flushed to zero vs kept (texts/s, one process each):")
        print(
            table([{"path": k, **v} for k, v in m["denormals"].items()], ["path", "batch", "flushed", "kept", "gain"])
        )
        if (args.model / "manifest.json").is_file():
            from bench.model_bench import run_serving_bench

            s = run_serving_bench(texts, args.model, [32, 128], [0, 8, 16, 32], 2 if args.smoke else 5)
            result["serving"] = s
            print(f"\n== serving scorer (tokenise+pad+run) over {s['texts']} mixed texts, {s['providers'][0]}")
            print(table(s["rows"], ["batch", "bucket", "texts_per_s"]))
    if not args.skip_pipeline:
        from bench.pipeline_bench import run_pipeline_bench

        if not (args.model / "manifest.json").is_file():
            print(f"no bundle at {args.model}: pipeline bench skipped", file=sys.stderr)
        else:
            p = run_pipeline_bench(texts, args.model, 200 if args.smoke else 3000,
                                   [0.5] if args.smoke else [0.25, 0.5, 0.9], [1] if args.smoke else [1, 2],
                                   profile_to=args.out.parent / "worker-profile.txt",
                                   broker_log=args.broker_log)  # fmt: skip
            result["pipeline"] = p
            print(f"\n== worker end to end (embedded broker, log level {p['broker_log']})")
            rows = [*p["scale_out"], p["overlap_off"]] if p["overlap_off"] else p["scale_out"]
            print(table(rows, ["workers", "overlap_io", "items_per_s", "seconds", "worker_cores", "broker_cores",
                               "load_gen_cores", "worker_cpu_ms_per_item", "worker_rss_mb"]))  # fmt: skip
            if p["overlap_off"] and p["sustained"]:
                p["overlap_speedup"] = round(p["sustained"]["items_per_s"] / p["overlap_off"]["items_per_s"], 2)
                print(f"overlapped scoring/writing vs one batch at a time: {p['overlap_speedup']}x")
            if "model" in result:
                int8 = [r for r in result["model"]["rows"] if r.get("path") == INT8_SMOOTH and r.get("batch") == 32]
                if int8 and p["sustained"]:
                    p["fraction_of_model_alone_int8_b32"] = round(
                        p["sustained"]["items_per_s"] / int8[0]["texts_per_s"], 3
                    )
                    print(f"worker end to end / model alone (INT8, batch 32): {p['fraction_of_model_alone_int8_b32']}")
                    # The same comparison per CPU second: on a small machine the broker and the load
                    # generator share the cores, so items/s alone understates the worker.
                    p["cpu_fraction_of_model_alone_int8_b32"] = round(
                        int8[0]["cpu_ms_per_text"] / p["sustained"]["worker_cpu_ms_per_item"], 3
                    )
                    print(f"  per CPU second (model CPU per text / worker CPU per item): "
                          f"{p['cpu_fraction_of_model_alone_int8_b32']}")  # fmt: skip
            serving = [r for r in result.get("serving", {}).get("rows", []) if r["batch"] == 32 and r["bucket"] == 16]
            if serving and p["sustained"]:
                p["fraction_of_serving_scorer_b32"] = round(
                    p["sustained"]["items_per_s"] / serving[0]["texts_per_s"], 3
                )
                print(f"worker end to end / its own scoring call alone (batch 32, bucket 16): "
                      f"{p['fraction_of_serving_scorer_b32']}")  # fmt: skip
            print("end-to-end latency, ms (input published_at -> scored record's Kafka timestamp)")
            print(table(p["latency"], ["fraction", "rate", "items", "p50", "p95", "p99"]))
            if p.get("profile"):
                print(f"\n== where the worker's CPU went (py-spy, {p['profile']['samples']} samples, one-worker burst)")
                print(table(p["profile"]["rows"], ["component", "share", "samples"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
