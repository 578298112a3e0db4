"""Calibrate a bundle: fit its temperatures on labelled sets, write them into its manifest, report.

Export calibrates every bundle it writes; `finsent-train calibrate BUNDLE`
does it again for a bundle written before (or after a change of data). The
served variant's raw logits are fitted, so calibrating twice gives the same
temperatures. Sets are pooled per task and language, as the worker applies
them; evaluation-only sets (PhraseBank) are never fitted on, and their
"after" column is the shipped temperature on text it never saw.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from monitor.core.language import served_language
from monitor.core.scores import softmax
from monitor.model.bundle import CALIBRATION_METHOD, MANIFEST, load_bundle, write_manifest
from training.data import TASK_LABELS, DataError, Examples
from training.evaluate import evaluation_only, set_language
from training.metrics import reliability
from training.onnx_runner import OnnxRunner
from training.temperature import MIN_ROWS, fit_pool, set_summary

REPORT = "calibration.md"
PLOT = "calibration.png"


def pool_sets(sets: dict[str, Examples], languages: list[str], preferred: Collection[str] = ()) -> dict[str, list[str]]:
    """For each pool ("sentiment/zh"), the sets its temperature is fitted on: pooled as the worker routes items.

    Evaluation-only sets are never fitted on. Where a pool holds any `preferred` set (a user's own
    labelled sample of their traffic), only those fit it; the others are reported at its temperature.
    """
    pools: dict[str, list[str]] = {}
    for name, ex in sets.items():
        lang = set_language(ex)
        if lang in languages and not evaluation_only(name, ex):
            pools.setdefault(f"{ex.task}/{lang}", []).append(name)
    return {k: [n for n in names if n in preferred] or names for k, names in sorted(pools.items())}


def calibration_block(logits: dict[str, np.ndarray], sets: dict[str, Examples], languages: list[str],
                      variant: str, preferred: Collection[str] = ()) -> dict[str, Any]:  # fmt: skip
    """manifest["calibration"] from each set's raw logits (its own task): temperatures, fits, per-set figures."""
    temps: dict[str, dict[str, float]] = {}
    pool_out: dict[str, Any] = {}
    after: dict[str, np.ndarray] = {}  # cross-fitted probabilities of every fitted set
    for key, names in pool_sets(sets, languages, preferred).items():
        z = np.concatenate([logits[n] for n in names])
        y = np.concatenate([np.asarray(sets[n].labels, dtype=np.int64) for n in names])
        fit = fit_pool(z, y)
        if fit is None:
            pool_out[key] = {"n": len(y), "sets": names, "temperature": 1.0, "note": f"fewer than {MIN_ROWS} rows"}
            continue
        task, lang = key.split("/")
        temps.setdefault(task, {})[lang] = fit.temperature
        pool_out[key] = {"sets": names, **fit.summary(z, y)}
        bounds = np.cumsum([0] + [len(sets[n].labels) for n in names])
        after |= {n: fit.after[bounds[i] : bounds[i + 1]] for i, n in enumerate(names)}
    return {"method": CALIBRATION_METHOD, "temperature": temps, "variant": variant,
            "fitted": datetime.now(UTC).isoformat(timespec="seconds"), "pools": pool_out,
            "sets": _per_set(logits, sets, languages, temps, after)}  # fmt: skip


def _per_set(logits: dict[str, np.ndarray], sets: dict[str, Examples], languages: list[str],
             temps: dict[str, dict[str, float]], after: dict[str, np.ndarray]) -> dict[str, Any]:  # fmt: skip
    """Each set before and after: cross-fitted where it was fitted on, else at its route's temperature."""
    out: dict[str, Any] = {}
    for name, z in logits.items():
        ex = sets[name]
        lang = set_language(ex)
        y = np.asarray(ex.labels, dtype=np.int64)
        t = temps.get(ex.task, {}).get(served_language(lang, languages), 1.0)
        probs = after.get(name, softmax(z, t))
        out[name] = {"task": ex.task, "lang": lang, "fitted": name in after, **set_summary(z, y, probs)}
    return out


def calibrate_bundle(bundle_dir: Path, sets: dict[str, Examples], preferred: Collection[str] = ()) -> dict[str, Any]:
    """Fit the bundle's served variant on `sets`, rewrite its manifest, write calibration.md and its plot.

    preferred: names of sets that alone fit the pools they fall in (`pool_sets`).
    """
    bundle = load_bundle(bundle_dir)
    runner = OnnxRunner.from_bundle(bundle)
    usable = {name: ex for name, ex in sets.items() if ex.task in bundle.tasks and ex.texts}
    for task in {ex.task for ex in usable.values()}:
        if bundle.tasks[task].labels != TASK_LABELS[task]:  # labelled rows index the training taxonomy
            raise DataError(f"bundle {bundle_dir}: its {task} labels are not the training taxonomy's, "
                            "so labelled sets cannot calibrate it")  # fmt: skip
    logits = {name: runner.logits(ex.texts)[ex.task] for name, ex in usable.items()}
    block = calibration_block(logits, usable, list(bundle.languages), bundle.variant, preferred)
    write_report(bundle_dir, block, logits, usable)
    manifest = json.loads((bundle_dir / MANIFEST).read_text(encoding="utf-8"))
    manifest["calibration"] = block
    write_manifest(bundle_dir, manifest)
    return block


def write_report(out: Path, block: dict[str, Any], logits: dict[str, np.ndarray], sets: dict[str, Examples]) -> None:
    """calibration.md (tables) and calibration.png (reliability diagrams before / after)."""
    lines = [
        "# Calibration (temperature scaling)",
        "",
        f"Served variant: {block['variant']}. One softmax temperature per task and language, fitted on the "
        "pooled validation sets by minimum negative log-likelihood; the worker divides logits by it. Labels "
        "never change (argmax is unchanged). ECE: expected calibration error, 15 bins; NLL: mean negative "
        'log-likelihood. "after" is cross-fitted for the sets fitted on (each half scored at the temperature '
        "fitted on the other half), and the shipped temperature for every other set, which no fit saw "
        "(evaluation-only sets; the bundle's own sets where a sample given with --file fitted their pool).",
        "",
        "| pool | sets | n | temperature | (halves) | ECE before | ECE after | NLL before | NLL after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, p in block["pools"].items():
        if "note" in p:
            lines.append(f"| {key} | {', '.join(p['sets'])} | {p['n']} | 1 ({p['note']}) | | | | | |")
            continue
        fold = " / ".join(f"{t:.2f}" for t in p["fold_temperatures"])
        lines.append(f"| {key} | {', '.join(p['sets'])} | {p['n']} | {p['temperature']:.3f} | {fold} "
                     f"| {p['ece_before']:.4f} | {p['ece_after']:.4f} | {p['nll_before']:.4f} | {p['nll_after']:.4f} |")  # fmt: skip
    lines += ["", "| set | task | lang | n | fitted on | ECE before | ECE after | NLL before | NLL after |",
              "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, s in block["sets"].items():
        lines.append(f"| {name} | {s['task']} | {s['lang']} | {s['n']} | {'yes' if s['fitted'] else 'no'} "
                     f"| {s['ece_before']:.4f} | {s['ece_after']:.4f} | {s['nll_before']:.4f} | {s['nll_after']:.4f} |")  # fmt: skip
    if logits:
        plot_reliability(out / PLOT, block, logits, sets)
        lines += ["", f"![reliability before and after]({PLOT})"]
    (out / REPORT).write_text("\n".join(lines) + "\n", encoding="utf-8")


def plot_reliability(path: Path, block: dict[str, Any], logits: dict[str, np.ndarray],
                     sets: dict[str, Examples]) -> Path:  # fmt: skip
    """One panel per set: accuracy against confidence per bin, before and after; the diagonal is perfect."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(logits)
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.8 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        s = block["sets"][name]
        y = np.asarray(sets[name].labels, dtype=np.int64)
        t = block["temperature"].get(s["task"], {}).get(s["lang"], 1.0)
        for probs, label, style in ((softmax(logits[name]), f"before (ECE {s['ece_before']:.3f})", "o-"),
                                    (softmax(logits[name], t), f"T={t:.2f} (ECE {s['ece_after']:.3f})", "s-")):  # fmt: skip
            conf, acc, _ = reliability(probs, y)
            ax.plot(conf, acc, style, ms=3, label=label)
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy")
        ax.set_title(f"{name} ({s['lang']})", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
