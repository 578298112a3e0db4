"""Evaluate a bundle (through onnxruntime, as the worker serves it) on labeled files; write JSON, Markdown, PNGs.

Every set is reported on its own (one per source and language in a
multilingual run) and, with `language_reports`, pooled per task and
language: a Chinese set must be visible as Chinese, not averaged into a
larger English one.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from monitor.model.bundle import MANIFEST, load_bundle, write_manifest
from training.data import TASK_LABELS, Examples
from training.metrics import classification_report
from training.onnx_runner import OnnxRunner

DEFAULT_LANG = "en"  # sets loaded from plain files carry no language: the default (tweets) recipe's
SUMMARY_KEYS = ("n", "accuracy", "macro_f1", "ece")  # per set in the manifest's metrics
REPORT_JSON, REPORT_MD = "eval.json", "eval.md"


def summaries(by_name: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each report cut to SUMMARY_KEYS, as the manifest's metrics hold them."""
    return {k: {m: v[m] for m in SUMMARY_KEYS} for k, v in by_name.items()}


def set_language(ex: Examples) -> str:
    """A set's language: its rows' (sources tag every row; a set is one source), else English."""
    if not ex.langs:
        return DEFAULT_LANG
    return Counter(ex.langs).most_common(1)[0][0]


def evaluation_only(name: str, ex: Examples) -> bool:
    """PhraseBank (CC BY-NC-SA) is an English news check outside the run's own sets: reported on its own,
    never pooled into a language's figures (which would then change with whether the file is present)."""
    return ex.source == "phrasebank" or name.startswith("phrasebank")


def bundle_probs(bundle: Path, sets: dict[str, Examples], variant: str = "auto") -> dict[str, np.ndarray]:
    """Probabilities of each set's own task; sets whose task the bundle lacks are left out."""
    b = load_bundle(bundle, variant)
    runner = OnnxRunner.from_bundle(b)
    return {name: runner.probs(ex.texts, langs=ex.langs or None)[ex.task]
            for name, ex in sets.items() if ex.task in b.tasks}  # fmt: skip


def reports(sets: dict[str, Examples], probs: dict[str, np.ndarray], variant: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, p in probs.items():
        ex = sets[name]
        rep = classification_report(p, ex.labels, TASK_LABELS[ex.task])
        rep.update(task=ex.task, lang=set_language(ex), source=ex.source, skipped=dict(ex.skipped), variant=variant)
        results[name] = rep
    return results


def language_reports(sets: dict[str, Examples], probs: dict[str, np.ndarray], variant: str) -> dict[str, Any]:
    """One report per task and language ("sentiment_zh"), over the rows of that task's sets in that language.

    Evaluation-only sets (`evaluation_only`) are left out.
    """
    pooled: dict[tuple[str, str], tuple[list[np.ndarray], list[int], list[str]]] = {}
    for name, p in probs.items():
        ex = sets[name]
        if evaluation_only(name, ex):
            continue
        ps, ys, names = pooled.setdefault((ex.task, set_language(ex)), ([], [], []))
        ps.append(p)
        ys += list(ex.labels)
        names.append(name)
    out: dict[str, Any] = {}
    for (task, lang), (ps, ys, names) in sorted(pooled.items()):
        rep = classification_report(np.concatenate(ps), ys, TASK_LABELS[task])
        rep.update(task=task, lang=lang, sets=names, variant=variant)
        out[f"{task}_{lang}"] = rep
    return out


def evaluate_bundle(bundle: Path, sets: dict[str, Examples], variant: str = "auto") -> dict[str, Any]:
    """Score labeled sets through onnxruntime, as the worker serves the bundle."""
    chosen = load_bundle(bundle, variant, verify=False).variant
    return reports(sets, bundle_probs(bundle, sets, chosen), chosen)


def plot_confusion(rep: dict[str, Any], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(rep["confusion"], dtype=np.float64)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    n = len(rep["labels"])
    size = 4 + 0.45 * n
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), rep["labels"], rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), rep["labels"], fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(
        f"{title}\nacc {rep['accuracy']:.3f}  macro-F1 {rep['macro_f1']:.3f}  ECE {rep['ece']:.3f}", fontsize=10
    )
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=6,
                        color="white" if norm[i, j] > 0.5 else "black")  # fmt: skip
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(results: dict[str, Any], out_dir: Path, extra: dict[str, Any] | None = None,
                 title: str = "Evaluation report", by_language: dict[str, Any] | None = None) -> None:  # fmt: skip
    """eval.json (everything), eval.md (tables for people) and one confusion PNG per set and per language."""
    out_dir.mkdir(parents=True, exist_ok=True)
    extra = extra or {}
    body: dict[str, Any] = {"datasets": results, **({"languages": by_language} if by_language else {}), **extra}
    (out_dir / "eval.json").write_text(json.dumps(body, indent=2, ensure_ascii=False))
    lines = [
        f"# {title}",
        "",
        "| dataset | task | lang | n | accuracy | macro-F1 | ECE |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['task']} | {r.get('lang', DEFAULT_LANG)} | {r['n']} | {r['accuracy']:.4f} "
            f"| {r['macro_f1']:.4f} | {r['ece']:.4f} |"
        )
    if by_language:
        agree = extra.get("int8_vs_fp32_by_language", {})
        parity = extra.get("parity", {}).get("by_language", {}).get("torch_vs_int8", {})
        lines += [
            "",
            "## Per language",
            "",
            "Sets of one task and language pooled (evaluation-only sets such as PhraseBank excluded); INT8/fp32: "
            "argmax agreement of the served INT8 model with fp32 ONNX on these rows; torch/INT8: the parity "
            "gate's agreement on that language's parity texts (both heads run on every text).",
            "",
            "| task | lang | sets | n | accuracy | macro-F1 | ECE | INT8/fp32 | torch/INT8 |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for key, r in by_language.items():
            a = agree.get(key, {}).get("argmax_agreement")
            p = parity.get(r["lang"], {}).get(r["task"], {}).get("argmax_agreement")
            lines.append(
                f"| {r['task']} | {r['lang']} | {', '.join(r['sets'])} | {r['n']} | {r['accuracy']:.4f} "
                f"| {r['macro_f1']:.4f} | {r['ece']:.4f} | {_pct(a)} | {_pct(p)} |"
            )
    for name, r in results.items():
        lines += ["", f"## {name}", "", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        for lab, pc in r["per_class"].items():
            lines.append(f"| {lab} | {pc['precision']:.3f} | {pc['recall']:.3f} | {pc['f1']:.3f} | {pc['support']} |")
        png = plot_confusion(r, out_dir / f"confusion_{name}.png", name)
        lines += ["", f"![confusion matrix {name}]({png.name})"]
    for key, r in (by_language or {}).items():
        png = plot_confusion(r, out_dir / f"confusion_lang_{key}.png", f"{r['task']} ({r['lang']}, pooled)")
        lines += ["", f"## {key} (pooled)", "", f"![confusion matrix {key}]({png.name})"]
    if extra:
        lines += ["", "## Export and parity", "", "```json", json.dumps(extra, indent=2, ensure_ascii=False), "```"]
    (out_dir / "eval.md").write_text("\n".join(lines) + "\n")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def refresh_served_report(bundle_dir: Path, sets: dict[str, Examples]) -> list[str]:
    """Re-score the served variant of a bundle whose temperatures changed: eval.md / eval.json and the
    manifest's metrics for it then show probabilities as served now.

    Only the sets the export reported are re-scored, so the report keeps its rows. A temperature never
    changes a label, so accuracy, macro-F1 and every agreement figure stay as they were; ECE moves.
    The fp32 figures (an int8-only bundle no longer holds the fp32 graph) stay the export's. Returns the
    names of the sets re-scored; none when the bundle has no report.
    """
    bundle_dir = Path(bundle_dir)
    manifest = json.loads((bundle_dir / MANIFEST).read_text(encoding="utf-8"))
    metrics = manifest.get("metrics", {})
    variant = metrics.get("served_variant")
    if not variant or not (bundle_dir / REPORT_JSON).is_file() or variant not in metrics:
        return []
    usable = {name: ex for name, ex in sets.items() if name in metrics[variant]}
    probs = bundle_probs(bundle_dir, usable, variant)
    res, by_lang = reports(usable, probs, variant), language_reports(usable, probs, variant)
    old = json.loads((bundle_dir / REPORT_JSON).read_text(encoding="utf-8"))
    first = (
        (bundle_dir / REPORT_MD).read_text(encoding="utf-8").splitlines()[0]
        if (bundle_dir / REPORT_MD).is_file()
        else ""
    )
    title = first.removeprefix("# ") or f"{manifest['name']} {manifest['version']} ({variant.upper()}, as served)"
    extra = {k: v for k, v in old.items() if k not in ("datasets", "languages")}
    write_report({**old.get("datasets", {}), **res}, bundle_dir, extra=extra, title=title,
                 by_language={**old.get("languages", {}), **by_lang})  # fmt: skip
    metrics[variant] = {**metrics[variant], **summaries(res)}
    key = f"{variant}_by_language"
    metrics[key] = {**metrics.get(key, {}), **summaries(by_lang)}
    write_manifest(bundle_dir, manifest)
    return sorted(res)
