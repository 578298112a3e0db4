"""Model candidates side by side: accuracy per dataset and language, INT8 agreement, cost, size.

    python -m bench.candidates models/finsent-minilm-l6 runs/bundles/ml-l6 ... [--out JSON] [--limit N]

Every bundle is measured through the worker's own serving path
(`monitor.model.scorer.Scorer`: normalised text, tokenizer, padding,
bucketing, the served INT8 graph, softmax), one onnxruntime thread, as a
worker runs by default:

* macro-F1 and accuracy on every validation set of the multilingual
  recipe plus Financial PhraseBank (evaluation only), and per task x
  language with the sets pooled;
* INT8 agreement: what the bundle's export recorded (argmax agreement of
  the served INT8 graph with fp32 on each evaluation set, and with torch on
  the parity texts, per language), the lowest value shown;
* CPU ms per item (process CPU time, so every thread counts) at batch 1 and
  batch 32, on English validation texts and on Chinese ones separately: a
  Chinese text tokenises to more pieces, and the stream carries both;
* size of the served files.

Rounds alternate over the candidates so a noisy neighbour hits all of them
alike. Compare rows of one run as ratios. The evaluation sets come from
$FINSENT_DATASETS (default ../shared/datasets).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DATASETS = Path(os.environ.get("FINSENT_DATASETS", REPO.parent / "shared" / "datasets"))
EVAL_SETS = ("tweets_sentiment", "sentfin", "phrasebank", "finfe", "tweets_topic", "finnl")
TIMING_TEXTS = 256


def load_sets(limit: int | None) -> dict[str, Any]:
    from training.sources import load_source

    return {name: load_source(name, "valid", DATASETS, limit, seed=7) for name in EVAL_SETS}


def accuracy(bundle: Path, sets: dict[str, Any]) -> dict[str, Any]:
    """Per set, then per task x language with the sets pooled (PhraseBank stays on its own): training's own
    evaluation, which scores through the worker's classifier."""
    from training.evaluate import bundle_probs, language_reports, reports

    probs = bundle_probs(bundle, sets)
    keep = ("n", "accuracy", "macro_f1")
    return {
        "sets": {name: {k: r[k] for k in keep} for name, r in reports(sets, probs, "auto").items()},
        "languages": {
            f"{r['task']}/{r['lang']}": {k: r[k] for k in keep} for r in language_reports(sets, probs, "auto").values()
        },
    }


def int8_agreement(manifest: dict[str, Any]) -> dict[str, Any]:
    """What the export measured: INT8 vs fp32 per evaluation set, torch vs INT8 per language and task."""
    vs_fp32 = (manifest.get("metrics") or {}).get("int8_vs_fp32") or {}
    fp32 = {k: v.get("argmax_agreement") for k, v in vs_fp32.items() if isinstance(v, dict)}
    parity = manifest.get("parity") or {}
    by_lang = (parity.get("by_language") or {}).get("torch_vs_int8") or {}
    torch_int8: dict[str, float] = {}
    for lang, tasks in by_lang.items():
        for task, v in (tasks or {}).items():
            if isinstance(v, dict) and "argmax_agreement" in v:
                torch_int8[f"{task}/{lang}"] = v["argmax_agreement"]
    if not torch_int8:
        for task, v in (parity.get("torch_vs_int8") or {}).items():
            if isinstance(v, dict) and "argmax_agreement" in v:
                torch_int8[f"{task}/en"] = v["argmax_agreement"]
    values = [v for v in [*fp32.values(), *torch_int8.values()] if isinstance(v, int | float)]
    return {"int8_vs_fp32": fp32, "torch_vs_int8": torch_int8, "min": min(values) if values else None}


def cpu_ms(scorer: Any, texts: Sequence[str], langs: Sequence[str], batch: int) -> float:
    """Process CPU milliseconds per item, scoring `texts` in batches of `batch` (after one warm-up batch)."""
    scorer.score(texts[:batch], langs[:batch])
    t0 = time.process_time()
    for s in range(0, len(texts), batch):
        scorer.score(texts[s : s + batch], langs[s : s + batch])
    return (time.process_time() - t0) * 1000 / len(texts)


def size_mb(bundle: Path, manifest: dict[str, Any]) -> float:
    files = [f for f in manifest.get("files", {}) if not f.endswith((".png", ".md", ".json")) or f == "tokenizer.json"]
    return round(sum((bundle / f).stat().st_size for f in files if (bundle / f).is_file()) / 1e6, 1)


def measure(bundles: list[Path], sets: dict[str, Any], rounds: int) -> dict[str, Any]:
    from monitor.model.scorer import Scorer

    timing = {
        "en": (sets["tweets_sentiment"].texts[:TIMING_TEXTS], ["en"] * TIMING_TEXTS),
        "zh": (sets["finfe"].texts[:TIMING_TEXTS], ["zh"] * TIMING_TEXTS),
    }
    scorers = {str(b): Scorer.from_paths([b], providers="cpu", intra_op_threads=1) for b in bundles}
    costs: dict[str, dict[str, list[float]]] = {k: {} for k in scorers}
    for _ in range(rounds):  # alternate, so drift in machine load hits every candidate alike
        for key, scorer in scorers.items():
            for lang, (texts, langs) in timing.items():
                for batch in (1, 32):
                    costs[key].setdefault(f"{lang}@{batch}", []).append(cpu_ms(scorer, texts, langs, batch))
    out = {}
    for b in bundles:
        key = str(b)
        manifest = json.loads((b / "manifest.json").read_text())
        out[key] = {
            "name": manifest.get("name"),
            "version": manifest.get("version"),
            "backbone": manifest.get("backbone"),
            "languages": manifest.get("languages", ["en"]),
            "size_mb": size_mb(b, manifest),
            "cpu_ms": {k: round(statistics.median(v), 3) for k, v in costs[key].items()},
            "int8": int8_agreement(manifest),
            **accuracy(b, sets),
        }
    return out


def table(results: dict[str, Any]) -> str:
    cols = ["tweets_sentiment", "sentfin", "phrasebank", "finfe", "tweets_topic", "finnl"]
    head = ("| candidate | " + " | ".join(cols) + " | sent en / zh | topic en / zh | INT8 min agree"
            " | CPU ms en @1 / @32 | CPU ms zh @1 / @32 | MB |")  # fmt: skip
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for key, r in results.items():
        f1 = [f"{r['sets'][c]['macro_f1']:.3f}" if c in r["sets"] else "-" for c in cols]
        lang = r["languages"]

        def pair(task: str, lang: dict[str, Any] = lang) -> str:
            return " / ".join(f"{lang[f'{task}/{x}']['macro_f1']:.3f}" if f"{task}/{x}" in lang else "-"
                              for x in ("en", "zh"))  # fmt: skip

        c = r["cpu_ms"]
        agree = f"{r['int8']['min'] * 100:.2f}%" if r["int8"]["min"] is not None else "-"
        lines.append(
            f"| {r['name']} ({Path(key).name}) | " + " | ".join(f1) + f" | {pair('sentiment')} | {pair('topic')} | "
            f"{agree} | {c['en@1']:.2f} / {c['en@32']:.2f} | {c['zh@1']:.2f} / {c['zh@32']:.2f} | {r['size_mb']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.candidates", description=__doc__.split("\n\n")[0])
    p.add_argument("bundles", nargs="+", type=Path, help="bundle directories to compare")
    p.add_argument("--rounds", type=int, default=3, help="timing rounds, alternating over the bundles")
    p.add_argument("--limit", type=int, help="seeded subset of each evaluation set (smoke runs)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "candidates.json")
    args = p.parse_args(argv)
    for b in args.bundles:
        if not (b / "manifest.json").is_file():
            p.error(f"{b} is not a model bundle (no manifest.json)")
    if not DATASETS.is_dir():
        p.error(f"evaluation datasets not found at {DATASETS} (set FINSENT_DATASETS)")
    started = time.monotonic()
    results = measure(args.bundles, load_sets(args.limit), args.rounds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"limit": args.limit, "rounds": args.rounds, "results": results}, indent=1))
    print(table(results))
    print(f"({time.monotonic() - started:.0f} s; JSON {args.out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
