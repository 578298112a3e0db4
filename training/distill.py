"""Knowledge distillation: a small student learns from a larger fine-tuned teacher's logits.

The student that serves must stay at MiniLM-L6's cost per item; a base-size
teacher (all-mpnet-base-v2, `training/mpnet_parts.py`) reads text better but
costs several times more. Trained on the teacher's softened outputs as well
as the labels, the student learns how sure the teacher is and which classes
it confuses, which one-hot labels do not carry (Hinton et al. 2015).

The teacher is a finished run directory (`finsent-train train ... --out
RUN`). Its logits on every training row are computed once, before the first
step, and cached in the student's run directory keyed by the teacher's
weights and the training rows, so a resumed run reuses them and a changed
teacher is never mixed with old targets. Tasks the teacher was not trained
on train on labels alone.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.data import DataError, Examples

log = logging.getLogger(__name__)

CACHE = "teacher_logits.npz"


def distill_loss(logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor, hard: nn.Module,
                 alpha: float, temperature: float) -> torch.Tensor:  # fmt: skip
    """(1 - alpha) * the label loss + alpha * T^2 * KL(teacher_T || student_T).

    T^2 keeps the soft term's gradients on the scale of the hard term's as T grows.
    """
    soft = F.kl_div(F.log_softmax(logits / temperature, dim=-1), F.log_softmax(teacher_logits / temperature, dim=-1),
                    reduction="batchmean", log_target=True)  # fmt: skip
    return (1.0 - alpha) * hard(logits, labels) + alpha * temperature**2 * soft


def teacher_digest(run_dir: Path) -> str:
    """Identifies the teacher's weights (its best.pt): part of the student run's identity."""
    p = Path(run_dir) / "best.pt"
    if not p.is_file() or not (Path(run_dir) / "train.json").is_file():
        raise DataError(f"teacher {run_dir} is not a finished training run (needs best.pt and train.json)")
    h = hashlib.sha256()
    with p.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def teacher_logits(run_dir: Path, train_sets: dict[str, Examples], cache_dir: Path, digest: str,
                   progress: bool = True) -> dict[str, torch.Tensor]:  # fmt: skip
    """The teacher's logits for every training row of each task it knows, from cache_dir when current."""
    key = digest + "".join(f"/{t}:{e.fingerprint()}" for t, e in sorted(train_sets.items()))
    cache = Path(cache_dir) / CACHE
    if cache.is_file():
        with np.load(cache) as z:
            if str(z["key"]) == key:
                return {t: torch.from_numpy(z[t]) for t in train_sets if t in z.files}
    from training.train import load_trained, predict_logits

    model, tokenizer, meta = load_trained(Path(run_dir))
    known = [t for t in train_sets if t in meta["config"]["tasks"]]
    if not known:
        raise DataError(f"teacher {run_dir} trained none of the tasks {', '.join(train_sets)}")
    out: dict[str, np.ndarray] = {}
    for t in known:  # the heads' classes are TASK_LABELS[t] in both models, in the same order
        log.warning("teacher %s: logits for %d %s rows", run_dir, len(train_sets[t].texts), t)
        out[t] = predict_logits(model, tokenizer, train_sets[t].texts, int(meta["config"]["max_length"]), t,
                                progress=progress)  # fmt: skip
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    arrays: dict[str, Any] = {"key": np.array(key), **out}
    np.savez(tmp, **arrays)
    tmp.replace(cache)
    return {t: torch.from_numpy(a) for t, a in out.items()}
