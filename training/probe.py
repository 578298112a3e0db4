"""Linear probe: how much the frozen multilingual backbone already knows, per dataset.

Before a long fine-tuning run, a cheap baseline says whether the rebuilt,
vocabulary-trimmed e5 encoder separates the classes of every dataset the
multilingual recipe uses, English and Chinese alike: mean-pooled features
of the frozen encoder (e5's "query: " prefix, as the model was trained)
and a class-balanced logistic regression on at most `--train-rows` seeded
training rows per dataset, macro-F1 on each full validation set (topic
valid for FinNL = its rows that the taxonomy maps). Fine-tuning should
beat these numbers on every row; a row it does not beat points at data or
mapping trouble rather than at the optimiser.

    python -m training.probe [--backbone e5-small-multilingual] [--train-rows 1500] [--out runs/probe]

Features are cached under --out, so a re-run with other classifier
settings costs seconds. No sklearn: the logistic regression is a few
lines of torch (L-BFGS, L2).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from training.data import TASK_LABELS, Examples
from training.metrics import classification_report
from training.sources import load_source

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

REPO = Path(__file__).resolve().parent.parent
DATASETS = Path(os.environ.get("FINSENT_DATASETS", REPO.parent / "shared" / "datasets"))
# (source, task) rows of the baseline table, in the order printed.
PROBE_SETS = ("tweets_sentiment", "sentfin", "finfe", "tweets_topic", "finnl")
PREFIX = "query: "


_LOADED: dict[str, tuple[PreTrainedTokenizerBase, PreTrainedModel]] = {}


def _load(backbone: str) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    if backbone not in _LOADED:
        from transformers import AutoModel, AutoTokenizer

        from training.model import backbone_dir

        path = backbone_dir(backbone)
        _LOADED[backbone] = (AutoTokenizer.from_pretrained(str(path)), AutoModel.from_pretrained(str(path)).eval())
    return _LOADED[backbone]


@torch.no_grad()
def embed(texts: list[str], backbone: str, max_length: int, batch_size: int = 64) -> np.ndarray:
    """Mean-pooled last hidden states, batches sorted by length (little padding)."""
    tok, model = _load(backbone)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), int(model.config.hidden_size)), dtype=np.float32)
    for i in range(0, len(order), batch_size):
        sel = order[i : i + batch_size]
        enc = tok([PREFIX + texts[j] for j in sel], truncation=True, max_length=max_length, padding=True,
                  return_tensors="pt")  # fmt: skip
        h = model(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
        out[sel] = ((h * m).sum(1) / m.sum(1).clamp(min=1.0)).numpy()
    return out


def fit_logreg(x: np.ndarray, y: np.ndarray, n_classes: int, l2: float = 1e-3, iters: int = 200) -> torch.nn.Linear:
    """Multinomial logistic regression, class-balanced (macro-F1 is the metric), standardised inputs."""
    torch.manual_seed(0)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    counts = torch.bincount(yt, minlength=n_classes).clamp(min=1).float()
    weight = (len(yt) / (n_classes * counts)).float()
    lin = torch.nn.Linear(x.shape[1], n_classes)
    opt = torch.optim.LBFGS(lin.parameters(), lr=1.0, max_iter=iters, line_search_fn="strong_wolfe")
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = loss_fn(lin(xt), yt) + l2 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lin


def _sample(ex: Examples, n: int, seed: int) -> Examples:
    if n < len(ex.texts):
        ex.subset(sorted(random.Random(seed).sample(range(len(ex.texts)), n)))
    return ex


def run(backbone: str, train_rows: int, max_length: int, out: Path, seed: int = 13) -> list[dict[str, object]]:
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    for name in PROBE_SETS:
        started = time.monotonic()
        tr = _sample(load_source(name, "train", DATASETS), train_rows, seed)
        va = load_source(name, "valid", DATASETS)
        cache = out / f"{name}-{backbone.replace('/', '_')}-{train_rows}-{max_length}-{tr.fingerprint()[:8]}.npz"
        if cache.is_file():
            z = np.load(cache)
            xtr, xva = z["train"], z["valid"]
        else:
            xtr = embed(tr.texts, backbone, max_length)
            xva = embed(va.texts, backbone, max_length)
            np.savez(cache, train=xtr, valid=xva)
        mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
        labels = TASK_LABELS[tr.task]
        lin = fit_logreg((xtr - mu) / sd, np.asarray(tr.labels), len(labels))
        with torch.no_grad():
            probs = torch.softmax(lin(torch.from_numpy((xva - mu) / sd)), -1).numpy()
        rep = classification_report(probs, va.labels, labels)
        present = sorted(set(va.labels))
        row = {"set": name, "task": tr.task, "lang": va.langs[0], "train_rows": len(tr.texts),
               "valid_rows": len(va.texts), "classes_in_valid": len(present), "accuracy": rep["accuracy"],
               "macro_f1": rep["macro_f1"], "seconds": round(time.monotonic() - started, 1)}  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
    (out / "probe.json").write_text(
        json.dumps({"backbone": backbone, "max_length": max_length, "rows": rows}, indent=2)
    )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.probe", description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="e5-small-multilingual")
    p.add_argument("--train-rows", type=int, default=1500, help="seeded training rows per dataset (at most)")
    p.add_argument("--max-length", type=int, default=64,
                   help="tokens per text (FinNL: median 52 pieces, its lead carries the topic)")  # fmt: skip
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(REPO / "runs" / "probe"), help="feature cache and probe.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = run(args.backbone, args.train_rows, args.max_length, Path(args.out))
    print("\n| set | task | lang | train rows | valid rows | accuracy | macro-F1 |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['set']} | {r['task']} | {r['lang']} | {r['train_rows']:,} | {r['valid_rows']:,} "
              f"| {r['accuracy']:.3f} | {r['macro_f1']:.3f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
