"""Evaluate a bundle (through onnxruntime, as the worker serves it) on labeled files; write JSON, Markdown, PNGs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from monitor.bundle import load_bundle
from training.data import TASK_LABELS, Examples
from training.metrics import classification_report
from training.onnx_runner import OnnxRunner


def bundle_probs(bundle: Path, sets: dict[str, Examples], variant: str = "auto") -> dict[str, np.ndarray]:
    """Probabilities of each set's own task; sets whose task the bundle lacks are left out."""
    b = load_bundle(bundle, variant)
    runner = OnnxRunner.from_bundle(b)
    return {name: runner.probs(ex.texts)[ex.task] for name, ex in sets.items() if ex.task in b.tasks}


def reports(sets: dict[str, Examples], probs: dict[str, np.ndarray], variant: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, p in probs.items():
        ex = sets[name]
        rep = classification_report(p, ex.labels, TASK_LABELS[ex.task])
        rep.update(task=ex.task, source=ex.source, skipped=dict(ex.skipped), variant=variant)
        results[name] = rep
    return results


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
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if norm[i, j] > 0.5 else "black")  # fmt: skip
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(results: dict[str, Any], out_dir: Path, extra: dict[str, Any] | None = None,
                 title: str = "Evaluation report") -> None:  # fmt: skip
    """eval.json (everything), eval.md (tables for people) and one confusion PNG per set."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "eval.json").write_text(json.dumps({"datasets": results, **(extra or {})}, indent=2))
    lines = [
        f"# {title}",
        "",
        "| dataset | task | n | accuracy | macro-F1 | ECE |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['task']} | {r['n']} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | {r['ece']:.4f} |"
        )
    for name, r in results.items():
        lines += ["", f"## {name}", "", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        for lab, pc in r["per_class"].items():
            lines.append(f"| {lab} | {pc['precision']:.3f} | {pc['recall']:.3f} | {pc['f1']:.3f} | {pc['support']} |")
        png = plot_confusion(r, out_dir / f"confusion_{name}.png", name)
        lines += ["", f"![confusion matrix {name}]({png.name})"]
    if extra:
        lines += ["", "## Export and parity", "", "```json", json.dumps(extra, indent=2), "```"]
    (out_dir / "eval.md").write_text("\n".join(lines) + "\n")
