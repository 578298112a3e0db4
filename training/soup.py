"""A weight soup: one model whose weights are the mean of several runs fine-tuned from the same start.

Runs of one recipe that differ only in schedule (3 and 4 epochs) end in one basin of the loss and
disagree on different texts; their averaged weights generalise a little better than either of them
(Wortsman et al. 2022, "Model soups") and cost nothing at serving time: the soup has the members'
architecture, so the exported bundle, its INT8 and its cost per item are those of one run.

A recipe names its members (`Recipe.members`); `finsent-train train/build --recipe` trains each into
`<run>/member-<i>` (each resumable on its own) and writes the soup into `<run>` as a run directory
that export reads like any other.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from monitor.model.bundle import sha256_file
from training.data import DataError, Examples

if TYPE_CHECKING:
    from training.train import TrainConfig

# Config fields every member must share for their weights to be averaged meaningfully: the same
# network (backbone, depth, heads) fed the same way. Schedule fields (epochs, patience) may differ.
SHARED_CONFIG = ("backbone", "tasks", "layers", "max_length", "random_init", "seed", "recipe")


def average_state_dicts(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean of floating-point tensors; integer buffers (position ids) must be equal and are kept."""
    if len(states) < 2:
        raise DataError(f"a soup needs at least 2 members, got {len(states)}")
    keys = list(states[0])
    for i, sd in enumerate(states[1:], 2):
        if list(sd) != keys:
            raise DataError(f"soup member {i} has other weights than member 1 (another architecture)")
        bad = [k for k in keys if sd[k].shape != states[0][k].shape]
        if bad:
            raise DataError(f"soup member {i}: shape of {bad[0]} differs from member 1's")
    out: dict[str, torch.Tensor] = {}
    for k in keys:
        first = states[0][k]
        if first.is_floating_point():
            out[k] = (torch.stack([sd[k].double() for sd in states]).mean(dim=0)).to(first.dtype)
        elif all(torch.equal(sd[k], first) for sd in states[1:]):
            out[k] = first.clone()
        else:
            raise DataError(f"soup members disagree on the integer buffer {k}")
    return out


def check_members(metas: list[dict[str, Any]], runs: list[Path]) -> None:
    """Refuse members that are not the same network trained from the same start."""
    first = metas[0]["config"]
    for run, meta in zip(runs[1:], metas[1:], strict=True):
        diff = [k for k in SHARED_CONFIG if meta["config"].get(k) != first.get(k)]
        if diff:
            raise DataError(f"soup member {run} differs from {runs[0]} in {', '.join(diff)}: "
                            "members must share backbone, tasks, depth, length and seed")  # fmt: skip
    tokenizers = {
        sha256_file(r / "tokenizer" / "tokenizer.json") for r in runs if (r / "tokenizer" / "tokenizer.json").is_file()
    }
    if len(tokenizers) > 1:
        raise DataError(f"soup members {', '.join(map(str, runs))} do not share one tokenizer")


RUN_FILES = ("checkpoint.pt", "best.pt", "train.json", "tokenizer", "teacher_logits.npz")


def adopt_run(src: Path, member: Path, cfg: TrainConfig, train_sets: dict[str, Examples],
              valid_sets: dict[str, Examples]) -> bool:  # fmt: skip
    """Move a plain run that `src` holds into the empty `member` directory when it is that member's run.

    A run directory built before its recipe became a soup holds one run in itself; when that run's
    checkpoint has the member's identity (same config and data), it is the member already, and moving it
    saves training it again. Anything else is left where it is.
    """
    from training.train import CHECKPOINT, _identity_diff, _load_checkpoint, _run_identity

    if not (src / CHECKPOINT).is_file() or (member / CHECKPOINT).exists():
        return False
    if _identity_diff(_load_checkpoint(src)["identity"], _run_identity(cfg, train_sets, valid_sets)):
        return False
    member.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        if (src / name).exists():
            shutil.move(str(src / name), str(member / name))
    return True


def write_soup(runs: list[Path], out: Path, valid_sets: dict[str, Examples]) -> dict[str, Any]:
    """Average the members' best checkpoints into `out` (best.pt, tokenizer/, train.json) and validate the soup.

    train.json keeps the first member's config (export reads backbone, depth and length from it) and
    adds `soup`: each member's schedule, steps, seconds, best score and checkpoint digest. Its
    `best_eval` and `best_mean_macro_f1` are the soup's own, measured on the same validation sets.
    """
    from training.train import TrainConfig, _brief, _evaluate, load_trained

    metas = [json.loads((r / "train.json").read_text()) for r in runs]
    check_members(metas, runs)
    states = [torch.load(r / "best.pt", map_location="cpu", weights_only=True) for r in runs]
    model, tokenizer, _ = load_trained(runs[0])
    model.load_state_dict(average_state_dicts(states))
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "best.pt")
    if (out / "tokenizer").exists():
        shutil.rmtree(out / "tokenizer")
    shutil.copytree(runs[0] / "tokenizer", out / "tokenizer")

    c = metas[0]["config"]
    cfg = TrainConfig(backbone=c["backbone"], tasks=tuple(c["tasks"]), max_length=int(c["max_length"]))
    by_set, by_lang = _evaluate(model, tokenizer, valid_sets, cfg)
    scores = [r["macro_f1"] for r in by_set.values()]
    meta = {**metas[0], "history": [], "steps": sum(m["steps"] for m in metas),
            "seconds": round(sum(m["seconds"] for m in metas), 1),
            "best_mean_macro_f1": sum(scores) / len(scores) if scores else 0.0,
            "best_eval": {"step": None, "datasets": _brief(by_set), "languages": _brief(by_lang)},
            "soup": [{"run": r.name, "epochs": m["config"]["epochs"], "patience": m["config"]["patience"],
                      "steps": m["steps"], "seconds": m["seconds"], "best_mean_macro_f1": m["best_mean_macro_f1"],
                      "best_sha256": sha256_file(r / "best.pt")} for r, m in zip(runs, metas, strict=True)]}  # fmt: skip
    (out / "train.json").write_text(json.dumps(meta, indent=2))
    return meta
