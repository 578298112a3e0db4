"""From a training run to a verified bundle: export, optimise, quantise, parity, evaluate, manifest.

The bundle is assembled in a staging directory next to the target and
moved into place only after every check passed, so a failed export never
leaves a half-written bundle where the worker (or git) would pick it up.

Multilingual runs: a gate over all texts pooled would let a good English
score hide a broken Chinese one (English is two thirds of the texts), so
calibration and parity texts are drawn from every evaluation set (one per
source and language of the run), parity is checked per task x language,
and the bundle declares the languages it was gated on
(manifest["languages"]).
"""

from __future__ import annotations

import json
import random
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from monitor.model.bundle import write_manifest
from training.calibrate import calibrate_bundle
from training.data import TASK_LABELS, Examples
from training.evaluate import (
    bundle_probs,
    evaluation_only,
    language_reports,
    reports,
    set_language,
    summaries,
    write_report,
)
from training.export import (
    FP32_MATMULS,
    ParityBounds,
    ParityError,
    calibration_feeds,
    check_parity,
    check_parity_by_language,
    compare,
    compare_by_language,
    export_onnx,
    optimize_onnx,
    ort_probs,
    quantize_int8,
    torch_probs,
)
from training.model import MultiTaskModel
from training.train import load_trained

if TYPE_CHECKING:
    from transformers import PreTrainedConfig


def int8_hint(method: str, compute: str) -> str:
    """What to try when INT8 fails a gate: the knobs of the method in use, then the other method."""
    if method != "weight-only":
        return "try --int8-fp32-matmuls with more layers in fp32, or --int8-method weight-only"
    if compute == "int8":
        return "try --int8-compute fp32 (integer arithmetic rounds activations too), or --int8-method dynamic-smooth"
    return "try --int8-method dynamic-smooth with --int8-fp32-matmuls naming the layers to keep in fp32"


def parity_texts(sets: dict[str, Examples], limit: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """A seeded sample from every set, and each text's language.

    Files are often sorted by label, so the head alone would be one class. Every set contributes, so
    every source and language of the run is in the parity check.
    """
    rng = random.Random(seed)
    texts: list[str] = []
    langs: list[str] = []
    for ex in sets.values():
        row_langs = ex.langs or [set_language(ex)] * len(ex.texts)
        for i in rng.sample(range(len(ex.texts)), min(limit, len(ex.texts))):
            texts.append(ex.texts[i])
            langs.append(row_langs[i])
    return texts, langs


def calibration_texts(
    sets: dict[str, Examples], exclude: Sequence[str], limit: int = 256, seed: int = 1
) -> tuple[list[str], dict[str, int]]:
    """Texts whose activation ranges calibrate smoothed INT8, and how many came from each set.

    Labels are never read, and none of them is a parity text, so the parity check still measures the
    quantised model on unseen text. Up to `limit` per set: each source and language sets its own
    activation ranges (Chinese news flashes run longer and use other pieces than English tweets).
    """
    rng = random.Random(seed)
    skip = set(exclude)
    texts: list[str] = []
    per_set: dict[str, int] = {}
    for name, ex in sets.items():
        pool = [t for t in ex.texts if t not in skip]
        picked = rng.sample(pool, min(limit, len(pool)))
        texts += picked
        per_set[name] = len(picked)
    return texts, per_set


def run_languages(meta: dict[str, Any]) -> list[str]:
    """The languages a run trained on, from train.json's rows_by_source ("finnl (zh)"); plain runs: ["en"]."""
    langs: set[str] = set()
    for d in meta.get("data", {}).values():
        for key in d.get("rows_by_source", {}):
            if m := re.search(r"\(([A-Za-z-]+)\)$", key):
                langs.add(m.group(1))
    return sorted(langs) or ["en"]


def run_sources(meta: dict[str, Any]) -> list[str]:
    """The named sources (training/sources.py) a recipe run validated on, else those it trained on.

    train.json records its validation sets (valid_sets) since resumable training; runs written before
    only list rows_by_source, and each of those sources has a valid split of the same name.
    """
    names = [v["source"] for v in meta.get("valid_sets", {}).values() if v.get("langs")]
    if not names:
        for d in meta.get("data", {}).values():
            names += [re.sub(r" \([A-Za-z-]+\)$", "", key) for key in d.get("rows_by_source", {})]
    return list(dict.fromkeys(names))


def int8_vs_fp32(sets: dict[str, Examples], p32: dict[str, np.ndarray], p8: dict[str, np.ndarray]) -> dict[str, Any]:
    """Agreement and accuracy loss of the served INT8 model against fp32 ONNX, per evaluation set."""
    out: dict[str, Any] = {}
    for name in p8:
        y = np.asarray(sets[name].labels)
        a32, a8 = p32[name].argmax(1), p8[name].argmax(1)
        out[name] = {
            "task": sets[name].task,
            "lang": set_language(sets[name]),
            "argmax_agreement": round(float((a32 == a8).mean()), 5),
            "max_prob_diff": round(float(np.abs(p32[name] - p8[name]).max()), 6),
            "accuracy_loss": round(float((a32 == y).mean() - (a8 == y).mean()), 5),
        }
    return out


def int8_vs_fp32_by_language(
    sets: dict[str, Examples], p32: dict[str, np.ndarray], p8: dict[str, np.ndarray]
) -> dict[str, Any]:
    """The same, with the sets of one task and language pooled ("sentiment_zh"), evaluation-only sets left out
    as in `language_reports`."""
    pooled: dict[str, tuple[list[np.ndarray], list[np.ndarray], list[str]]] = {}
    for name in p8:
        if evaluation_only(name, sets[name]):
            continue
        a, b, names = pooled.setdefault(f"{sets[name].task}_{set_language(sets[name])}", ([], [], []))
        a.append(p32[name].argmax(1))
        b.append(p8[name].argmax(1))
        names.append(name)
    return {
        key: {"sets": names, "n": int(sum(len(x) for x in a)),
              "argmax_agreement": round(float((np.concatenate(a) == np.concatenate(b)).mean()), 5)}
        for key, (a, b, names) in sorted(pooled.items())
    }  # fmt: skip


def _save_tokenizer(tokenizer: Any, out: Path) -> None:
    """tokenizer.json with its padding section set to the model's pad token.

    The worker reads the pad id from there (monitor.model.bundle.tokenizer_pad_id): e5's pad is "<pad>" (id
    1), and whether transformers writes the section depends on how the tokenizer was last called.
    """
    from tokenizers import Tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        tok = Tokenizer.from_file(str(Path(tmp) / "tokenizer.json"))
    if tokenizer.pad_token_id is not None:
        tok.enable_padding(pad_id=int(tokenizer.pad_token_id), pad_token=str(tokenizer.pad_token))
    tok.save(str(out / "tokenizer.json"))


def export_bundle(
    run_dir: Path,
    out: Path,
    eval_sets: dict[str, Examples],
    *,
    name: str = "finsent-minilm-l6",
    version: str | None = None,
    keep_fp32: bool = True,
    bounds: ParityBounds | None = None,
    parity_limit: int = 700,
    int8_method: str = "dynamic-smooth",
    fp32_matmuls: str | None = None,
    int8_compute: str = "fp32",
) -> dict[str, Any]:
    """Write a bundle for the run's best checkpoint; raises ParityError when an ONNX variant drifts.

    The parity gate holds per task and per language the run trained on (a language without parity
    texts fails too: the gate must have seen it). Timings of each stage go into the manifest
    (`export_timings`), which `finsent-train build` prints.
    """
    bounds = bounds or ParityBounds()
    fp32_matmuls = FP32_MATMULS if fp32_matmuls is None else fp32_matmuls
    module, tokenizer, meta = load_trained(run_dir)
    model = cast(MultiTaskModel, module)  # load_trained builds a MultiTaskModel
    max_length = int(meta["config"]["max_length"])
    languages = run_languages(meta)
    started = time.monotonic()
    timings: dict[str, float] = {}
    out = out.resolve()
    stage = _fresh_stage(out)
    _save_tokenizer(tokenizer, stage)
    texts, text_langs = parity_texts(eval_sets, parity_limit)
    _require_parity_languages(languages, text_langs)
    fp32, int8, calib_info = _export_and_quantise(model, tokenizer, stage, eval_sets, texts, max_length, int8_method,
                                                  fp32_matmuls, int8_compute, timings)  # fmt: skip
    with _timed(timings, "parity"):
        parity = _parity(model, tokenizer, stage, fp32, int8, texts, text_langs, max_length, bounds)
    hint = int8_hint(int8_method, int8_compute)
    _gate_parity(stage, parity, bounds, int8_method, hint)
    manifest = _manifest(meta, name, version, languages, list(model.task_names), int8_method, int8_compute,
                         calib_info, parity)  # fmt: skip
    write_manifest(stage, manifest)
    with _timed(timings, "calibrate"):  # before evaluation, so that the report shows probabilities as served
        manifest["calibration"] = calibrate_bundle(stage, eval_sets)
    with _timed(timings, "evaluate"):
        manifest["metrics"] = _evaluate_stage(stage, eval_sets, f"{name} {manifest['version']}", parity)
    _gate_int8_agreement(manifest["metrics"]["int8_vs_fp32"], bounds, hint)
    if not keep_fp32:
        (stage / "model.onnx").unlink()
    manifest["export_seconds"] = round(time.monotonic() - started, 1)
    manifest["export_timings"] = {k: round(v, 1) for k, v in timings.items()}
    write_manifest(stage, manifest)
    shutil.rmtree(out, ignore_errors=True)
    stage.rename(out)
    return json.loads((out / "manifest.json").read_text())


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    """Seconds of the block under timings[stage] (not recorded when the block raises)."""
    t0 = time.monotonic()
    yield
    timings[stage] = time.monotonic() - t0


def _fresh_stage(out: Path) -> Path:
    """An empty staging directory next to `out`: the bundle moves into place only once every check passed."""
    stage = out.with_name(out.name + ".staging")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    return stage


def _require_parity_languages(languages: list[str], text_langs: list[str]) -> None:
    """Every language the run trained on needs parity texts: the gate must have seen it."""
    missing = [lang for lang in languages if lang not in text_langs]
    if missing:
        raise ParityError(f"no parity texts in {', '.join(missing)}: the evaluation sets cover "
                          f"{', '.join(sorted(set(text_langs))) or 'nothing'}, the run trained on {', '.join(languages)}")  # fmt: skip


def _export_and_quantise(model: MultiTaskModel, tokenizer: Any, stage: Path, eval_sets: dict[str, Examples],
                         parity: list[str], max_length: int, int8_method: str, fp32_matmuls: str,
                         int8_compute: str, timings: dict[str, float]) -> tuple[Path, Path, dict[str, Any] | None]:  # fmt: skip
    """model.onnx (optimised fp32) and model.int8.onnx in `stage`, and how the INT8 model was calibrated."""
    with tempfile.TemporaryDirectory() as tmp:
        with _timed(timings, "onnx"):
            raw = export_onnx(model, tokenizer, Path(tmp) / "raw.onnx", max_length)
            enc_cfg = cast("PreTrainedConfig", model.encoder.config)
            fp32 = optimize_onnx(raw, stage / "model.onnx", int(enc_cfg.num_attention_heads), int(enc_cfg.hidden_size))
        with _timed(timings, "int8"):
            calib, calib_info = None, None
            if int8_method == "dynamic-smooth":
                calib, calib_info = _calibration(tokenizer, eval_sets, parity, max_length, fp32_matmuls)
            # Quantise the plain export: the fused graph defeats the quantiser's shape inference.
            # onnxruntime applies the same fusions to the INT8 graph when it loads it.
            int8 = quantize_int8(raw, stage / "model.int8.onnx", int8_method, calibration=calib,
                                 fp32_matmuls=fp32_matmuls, compute=int8_compute)  # fmt: skip
    return fp32, int8, calib_info


def _calibration(tokenizer: Any, eval_sets: dict[str, Examples], parity: list[str], max_length: int,
                 fp32_matmuls: str) -> tuple[list[dict[str, np.ndarray]], dict[str, Any]]:  # fmt: skip
    """SmoothQuant calibration batches from texts outside the parity sample, and the manifest's note on them."""
    held_out, per_set = calibration_texts(eval_sets, parity)
    # Small evaluation sets (smoke runs) may all go to parity: calibrate on those, and say so.
    disjoint = len(held_out) >= 32
    calib_texts = held_out if disjoint else parity
    calib = calibration_feeds(tokenizer, calib_texts, max_length)
    calib_info = {"texts": len(calib_texts), "disjoint_from_parity": disjoint,
                  "per_set": per_set if disjoint else {}, "fp32_matmuls": fp32_matmuls}  # fmt: skip
    return calib, calib_info


def _parity(model: MultiTaskModel, tokenizer: Any, stage: Path, fp32: Path, int8: Path, texts: list[str],
            text_langs: list[str], max_length: int, bounds: ParityBounds) -> dict[str, Any]:  # fmt: skip
    """torch, ONNX fp32 and ONNX INT8 compared pairwise on the parity texts, pooled and per language."""
    tok_file = stage / "tokenizer.json"
    tasks = list(model.task_names)
    ref = torch_probs(model, tokenizer, texts, max_length)
    p32 = ort_probs(fp32, tok_file, texts, max_length, tasks)
    p8 = ort_probs(int8, tok_file, texts, max_length, tasks)
    return {"texts": len(texts), "texts_by_language": dict(sorted(Counter(text_langs).items())),
            "bounds": bounds.__dict__, "torch_vs_fp32": compare(ref, p32),
            "torch_vs_int8": compare(ref, p8), "fp32_vs_int8": compare(p32, p8),
            "by_language": {pair: compare_by_language(a, b, text_langs)
                            for pair, (a, b) in {"torch_vs_fp32": (ref, p32), "torch_vs_int8": (ref, p8),
                                                 "fp32_vs_int8": (p32, p8)}.items()}}  # fmt: skip


def _gate_parity(stage: Path, parity: dict[str, Any], bounds: ParityBounds, int8_method: str, hint: str) -> None:
    """Raise ParityError when fp32 or INT8 drifts from torch for any task in any language."""
    # Kept in the staging directory when a gate fails, for a look at every task and language.
    (stage / "parity.json").write_text(json.dumps(parity, indent=2))
    detail = f"(all numbers: {stage / 'parity.json'})"
    by_lang = parity["by_language"]
    check_parity_by_language(by_lang["torch_vs_fp32"], bounds.fp32_min_agreement, bounds.fp32_max_prob_diff,
                             "ONNX fp32", detail)  # fmt: skip
    check_parity_by_language(by_lang["torch_vs_int8"], bounds.int8_min_agreement, bounds.int8_max_prob_diff,
                             f"ONNX INT8 ({int8_method})", f"{hint} {detail}")  # fmt: skip
    # Pooled over languages too (implied by the per-language gate; kept for the report's headline).
    check_parity(parity["torch_vs_fp32"], bounds.fp32_min_agreement, bounds.fp32_max_prob_diff, "ONNX fp32")
    check_parity(parity["torch_vs_int8"], bounds.int8_min_agreement, bounds.int8_max_prob_diff, "ONNX INT8")
    (stage / "parity.json").unlink()


def _manifest(meta: dict[str, Any], name: str, version: str | None, languages: list[str], tasks: list[str],
              int8_method: str, int8_compute: str, calib_info: dict[str, Any] | None,
              parity: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """manifest.json before evaluation: what the bundle holds, how it was trained, its parity numbers."""
    cfg = meta["config"]
    return {
        "name": name,
        "version": version or datetime.now(UTC).strftime("%Y.%m.%d.%H%M"),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "backbone": cfg["backbone"],
        "languages": languages,
        "tasks": {t: {"labels": list(TASK_LABELS[t]), "output": f"{t}_logits"} for t in tasks},
        "max_length": int(cfg["max_length"]),
        "tokenizer": "tokenizer.json",
        "onnx": {"opset": 17, "inputs": ["input_ids", "attention_mask"], "int8": int8_method}
        | ({"int8_compute": int8_compute} if int8_method == "weight-only" else {})
        | ({"int8_calibration": calib_info} if calib_info else {}),
        "training": {k: cfg[k] for k in ("epochs", "batch_size", "lr", "seed", "max_length", "eval_every", "patience")}
        | {
            "recipe": cfg.get("recipe", "default"),
            "device": cfg.get("device", "cpu"),  # "seconds" below means little without it
            "steps": meta["steps"],
            "seconds": meta["seconds"],
            "best_mean_macro_f1": meta["best_mean_macro_f1"],
            "history": meta.get("history", []),
        }
        | ({"distilled_from": meta["distilled_from"]} if "distilled_from" in meta else {})
        | ({"soup": meta["soup"]} if "soup" in meta else {}),  # fmt: skip
        "data_fingerprint": meta["data"],
        "parity": parity,
    }


def _evaluate_stage(stage: Path, eval_sets: dict[str, Examples], title: str, parity: dict[str, Any]) -> dict[str, Any]:
    """The staged bundle scored as the worker loads it (fp32 and INT8): the manifest's metrics, and eval.md."""
    probs32 = bundle_probs(stage, eval_sets, "fp32")
    probs8 = bundle_probs(stage, eval_sets, "int8")
    res32, res8 = reports(eval_sets, probs32, "fp32"), reports(eval_sets, probs8, "int8")
    lang8 = language_reports(eval_sets, probs8, "int8")
    agreement = int8_vs_fp32(eval_sets, probs32, probs8)
    agreement_lang = int8_vs_fp32_by_language(eval_sets, probs32, probs8)
    metrics = {
        "served_variant": "int8",
        "int8": summaries(res8),
        "fp32": summaries(res32),
        "int8_by_language": summaries(lang8),
        "int8_vs_fp32": agreement,
        "int8_vs_fp32_by_language": agreement_lang,
    }
    extra = {"fp32": metrics["fp32"], "int8_vs_fp32": agreement,
             "int8_vs_fp32_by_language": agreement_lang, "parity": parity}  # fmt: skip
    write_report(res8, stage, extra=extra, title=f"{title} (INT8, as served)", by_language=lang8)
    return metrics


def _gate_int8_agreement(agreement: dict[str, Any], bounds: ParityBounds, hint: str) -> None:
    """Raise ParityError when the served INT8 model disagrees with fp32 ONNX too often on any evaluation set."""
    low = [f"{k} ({a['task']}, {a['lang']}) {a['argmax_agreement']:.4f}" for k, a in agreement.items()
           if a["argmax_agreement"] < bounds.int8_min_agreement]  # fmt: skip
    if low:
        raise ParityError(f"INT8 vs fp32 argmax agreement below {bounds.int8_min_agreement} on "
                          f"{'; '.join(low)}; {hint}")  # fmt: skip
