"""The README's promise for every command: --help works, and bad arguments, files, settings or an
unreachable broker give one line on stderr and exit code 2, never a traceback or a usage block.

`--help` and the missing-extra message are checked in a subprocess that cannot import torch,
transformers or onnx (the dev environment has them; a worker install does not).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from monitor import cli
from monitor.stream.clients import is_unreachable
from training import cli as train_cli

FINSENT_COMMANDS = ["worker", "demo", "replay", "tail", "notify"]
TRAIN_COMMANDS = ["train", "export", "build", "evaluate", "predict"]
KAFKA_LINE = "finsent: error: cannot reach Kafka at 127.0.0.1:{port}; is the broker running? (--bootstrap / FINSENT_KAFKA__BOOTSTRAP)"

# Runs CLI mains in-process under an import blocker and prints, per argv, the exit code and output.
WITHOUT_TRAIN_EXTRA = textwrap.dedent(
    """
    import contextlib, importlib.abc, io, json, sys

    BLOCKED = {"torch", "transformers", "onnx", "onnxscript"}

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Blocker())
    from monitor.cli import main as finsent
    from training.cli import main as finsent_train

    results = []
    for prog, argv in json.loads(sys.argv[1]):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = (finsent if prog == "finsent" else finsent_train)(argv)
            except SystemExit as exc:
                rc = exc.code
        results.append({"argv": [prog, *argv], "rc": rc, "out": out.getvalue(), "err": err.getvalue()})
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    print(json.dumps({"results": results, "loaded": loaded}))
    """
)

REPO = Path(__file__).resolve().parent.parent


def run_without_train_extra(calls: list[tuple[str, list[str]]]) -> list[dict[str, object]]:
    proc = subprocess.run(
        [sys.executable, "-c", WITHOUT_TRAIN_EXTRA, json.dumps(calls)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout.splitlines()[-1])
    assert data["loaded"] == []
    return data["results"]


def test_every_help_works_without_the_train_extra() -> None:
    calls = [("finsent", ["--help"])] + [("finsent", [c, "--help"]) for c in FINSENT_COMMANDS]
    calls += [("finsent-train", ["--help"])] + [("finsent-train", [c, "--help"]) for c in TRAIN_COMMANDS]
    for r in run_without_train_extra(calls):
        assert r["rc"] == 0, r
        assert str(r["out"]).startswith("usage: "), r
        assert r["err"] == "", r


def test_training_commands_without_torch_say_which_extra(tmp_path: Path) -> None:
    calls = [
        ("finsent-train", ["train", "--out", str(tmp_path / "run")]),
        ("finsent-train", ["export", str(tmp_path / "run"), "--out", str(tmp_path / "b")]),
        ("finsent-train", ["build", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "b")]),
    ]
    for (_, argv), r in zip(calls, run_without_train_extra(calls), strict=True):
        assert r["rc"] == 2, r
        assert r["err"] == (
            f"finsent-train {argv[0]}: error: needs the train extra (torch is not installed): "
            "pip install 'finsent[train]'\n"
        ), r


@pytest.mark.parametrize(
    ("main", "argv", "line"),
    [
        (cli.main, ["replay", "x.csv", "--rate", "x"],
         "finsent replay: error: argument --rate: invalid float value: 'x' (see finsent replay --help)"),
        (cli.main, ["replay"], "finsent replay: error: the following arguments are required: file (see finsent replay --help)"),
        (cli.main, ["tail", "--log-level", "LOUD"], "finsent tail: error: argument --log-level: invalid choice: 'LOUD'"),
        (cli.main, ["tail", "--nope"], "finsent tail: error: unrecognized arguments: --nope (see finsent tail --help)"),
        (cli.main, [], "finsent: error: the following arguments are required: COMMAND (see finsent --help)"),
        (cli.main, ["bogus"], "finsent: error: argument COMMAND: invalid choice: 'bogus'"),
        (train_cli.main, ["train", "--out", "r", "--epochs", "q"],
         "finsent-train train: error: argument --epochs: invalid float value: 'q' (see finsent-train train --help)"),
        (train_cli.main, ["evaluate", "b"], "finsent-train evaluate: error: the following arguments are required: file"),
        (train_cli.main, [], "finsent-train: error: the following arguments are required: COMMAND"),
    ],
)  # fmt: skip
def test_argument_errors_are_one_line(main: object, argv: list[str], line: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)  # type: ignore[operator]
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(line), err


def test_a_build_without_out_is_refused_unless_it_rebuilds_the_shipped_bundle(capsys: pytest.CaptureFixture) -> None:
    for argv in (["build"], ["build", "--recipe", "multilingual"]):
        assert train_cli.main(argv) == 2
        assert capsys.readouterr().err == (
            "finsent-train: error: build needs --out, except with --recipe english, which rebuilds the shipped "
            "English bundle in models/finsent-minilm-l6\n"
        )


def test_export_quantises_as_the_recipe_says_unless_a_flag_says_otherwise() -> None:
    from argparse import Namespace

    none = Namespace(int8_method=None, int8_compute=None, int8_fp32_matmuls=None)
    method, compute, fp32 = train_cli._int8_choice(none, "english")
    assert (method, compute) == ("dynamic-smooth", "fp32") and fp32 is not None and "layer\\.0/" in fp32
    assert train_cli._int8_choice(none, "default") == ("dynamic-smooth", "fp32", None)
    assert train_cli._int8_choice(none, "multilingual") == ("weight-only", "int8", None)
    assert train_cli._int8_choice(none, "mine-from-a-toml-file") == ("dynamic-smooth", "fp32", None)
    flags = Namespace(int8_method="weight-only", int8_compute="int8", int8_fp32_matmuls="")
    assert train_cli._int8_choice(flags, "english") == ("weight-only", "int8", "")


def test_export_quantises_a_toml_recipe_run_as_its_recorded_recipe_says(tmp_path: Path) -> None:
    """A .toml recipe's INT8 choice travels with the run (recipe.json), since export only knows its name."""
    import dataclasses
    from argparse import Namespace

    from training.sources import load_recipe

    f = tmp_path / "zh.toml"
    f.write_text('backbone = "x"\nint8_method = "weight-only"\nint8_compute = "int8"\n'
                 '[train.sentiment]\nfinfe = 1.0\n')  # fmt: skip
    run = tmp_path / "run"
    run.mkdir()
    (run / train_cli.RECIPE_FILE).write_text(json.dumps(dataclasses.asdict(load_recipe(str(f)))))
    none = Namespace(int8_method=None, int8_compute=None, int8_fp32_matmuls=None)
    assert train_cli._int8_choice(none, "zh", run) == ("weight-only", "int8", None)
    assert train_cli._int8_choice(none, "zh", tmp_path) == ("dynamic-smooth", "fp32", None)  # no record
    flags = Namespace(int8_method="dynamic", int8_compute=None, int8_fp32_matmuls=None)
    assert train_cli._int8_choice(flags, "zh", run) == ("dynamic", "int8", None)
    (run / train_cli.RECIPE_FILE).write_text("{")
    with pytest.raises(train_cli.DataError, match=r"recipe\.json cannot be read"):
        train_cli._int8_choice(none, "zh", run)
    edited = {**dataclasses.asdict(load_recipe(str(f))), "int8_compute": "int4"}  # a hand edit: checked too
    (run / train_cli.RECIPE_FILE).write_text(json.dumps(edited))
    with pytest.raises(train_cli.DataError, match="unknown int8_compute 'int4'"):
        train_cli._int8_choice(none, "zh", run)


def test_bad_settings_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "x.toml"
    cfg.write_text("[surge]\nkk = 3\n")
    assert cli.main(["tail", "--config", str(cfg)]) == 2
    assert capsys.readouterr().err == f"finsent: error: config file {cfg}: unknown key surge.kk\n"
    assert cli.main(["tail", "--config", str(tmp_path / "missing.toml")]) == 2
    assert capsys.readouterr().err == f"finsent: error: config file {tmp_path / 'missing.toml'} does not exist\n"
    assert cli.main(["worker", "--batch-size", "0"]) == 2  # 0 is validated, not taken as "unset"
    assert "model.batch_size" in capsys.readouterr().err
    monkeypatch.setenv("FINSENT_SURGE__KK", "3")
    assert cli.main(["tail"]) == 2
    assert capsys.readouterr().err == "finsent: error: environment variable FINSENT_SURGE__KK: unknown key surge.kk\n"


def test_notify_bad_listen_is_one_line(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["notify", "--listen", "abc"]) == 2
    assert capsys.readouterr().err == "finsent: error: --listen 'abc' is not HOST:PORT (e.g. 127.0.0.1:9095)\n"


def test_unreachable_is_recognised_through_wrapping() -> None:
    from kafka.errors import KafkaConnectionError, KafkaTimeoutError

    def wrapped(inner: Exception) -> cli.CliError:
        try:
            try:
                raise inner
            except Exception as exc:
                raise cli.CliError(f"cannot connect: {exc}") from None
        except cli.CliError as outer:
            return outer

    assert is_unreachable(wrapped(KafkaTimeoutError("Unable to bootstrap from ['127.0.0.1:9']")))
    assert is_unreachable(KafkaConnectionError("111 ECONNREFUSED"))
    assert not is_unreachable(wrapped(KafkaTimeoutError("Failed to update metadata after 60.0 secs.")))
    assert not is_unreachable(wrapped(ValueError("no")))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_unreachable_broker_is_one_line_for_every_kafka_command(tmp_path: Path) -> None:
    """Against a closed port every command that talks to Kafka prints one line (the client
    libraries log dozens of reconnect lines first unless silenced) and exits 2. All run at once:
    each waits out the bootstrap timeout (~10 s)."""
    port = _closed_port()
    data = tmp_path / "items.csv"
    data.write_text("id,text\n1,Tesla recalls cars\n")
    commands = {
        "tail": ["tail", "--timeout", "1"],
        "replay": ["replay", str(data)],
        "replay-no-create": ["replay", str(data), "--no-create-topic"],
        "worker": ["worker", "--metrics-port", "0", "--datadir", str(tmp_path / "w1")],
        "worker-no-create": ["worker", "--no-create-topics", "--metrics-port", "0", "--datadir", str(tmp_path / "w2")],
        "notify": ["notify", "--listen", "127.0.0.1:0"],
    }
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "monitor.cli", *argv, "--bootstrap", f"127.0.0.1:{port}"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, argv in commands.items()
    }
    try:
        for name, proc in procs.items():
            _, err = proc.communicate(timeout=90)
            assert (proc.returncode, err) == (2, KAFKA_LINE.format(port=port) + "\n"), name
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()


def test_a_chinese_only_run_is_not_evaluated_on_english_news(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PhraseBank joins a recipe run's sets only when the run read English: its texts would join the parity gate."""
    from argparse import Namespace

    from tests.test_training_data import _fake_datasets

    monkeypatch.setattr(train_cli, "DATASETS", _fake_datasets(tmp_path / "datasets"))
    args = Namespace(topic_valid=None, sentiment_valid=None, news_eval=None, limit=None, run="r")

    def meta(*sources: str) -> dict:
        return {
            "config": {"tasks": ["sentiment"]},
            "data": {"sentiment": {"rows_by_source": dict.fromkeys(sources, 1)}},
        }

    assert set(train_cli.recipe_eval_sets(args, meta("finfe (zh)"))) == {"finfe_valid"}
    assert set(train_cli.recipe_eval_sets(args, meta("finfe (zh)", "sentfin (en)"))) == {
        "finfe_valid", "sentfin_valid", "phrasebank_75agree"}  # fmt: skip


def test_a_reader_that_leaves_early_ends_the_command_quietly(tmp_path: Path) -> None:
    """`finsent-train predict ... | head -1`: exit 141 like a Unix filter, no traceback."""
    import subprocess
    import sys

    from tests.tiny_bundle import make_bundle

    b = make_bundle(tmp_path / "b")
    proc = subprocess.Popen([sys.executable, "-m", "training.cli", "predict", str(b)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write(b"shares surge record\n" * 5000)  # far more output than a pipe buffers
    proc.stdin.close()
    assert proc.stdout.readline().startswith(b"{")
    proc.stdout.close()
    assert proc.wait(timeout=120) == 141
    assert b"Traceback" not in proc.stderr.read()
