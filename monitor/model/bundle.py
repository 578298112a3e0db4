"""Model bundle: a directory with ONNX model(s), tokenizer and manifest.json.

The format is the contract between `training/` (writes it) and the worker
(reads it). Loading verifies every file's sha256 against the manifest so a
truncated copy or a tampered model is refused before it scores anything.
No pickle: the bundle holds ONNX protobufs, JSON and tokenizer JSON only.

Layout::

    bundle/
      manifest.json
      model.onnx          (fp32, optional when model.int8.onnx is present)
      model.int8.onnx     (dynamic INT8, optional)
      tokenizer.json      (Hugging Face `tokenizers` format)
      ...                 (reports, plots: listed in manifest["files"] too)

ONNX interface: inputs `input_ids`, `attention_mask` (int64, [batch, seq]),
optionally `token_type_ids`; one output `<task>_logits` [batch, n_labels]
per task in manifest["tasks"].

manifest["languages"] (optional) lists the languages the model was trained
and gated on, e.g. ["en", "zh"]; bundles written before the field existed
were English-only, so a missing field reads as ["en"].

manifest["calibration"] (optional) holds one softmax temperature per task
and language, fitted on held-out labelled text after export (training/
calibrate.py)::

    "calibration": {"method": "temperature",
                    "temperature": {"sentiment": {"en": 1.41, "zh": 2.2}}, ...}

The worker divides an item's logits by its language's temperature before the
softmax: probabilities, confidences and sentiment scores then mean what they
say (of items scored 0.8, about 80 % right), and no label changes. A task or
language without an entry keeps temperature 1.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitor.model.normalize import NORMALIZATION_VERSION

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
SENTIMENT_LABELS = ("negative", "neutral", "positive")
VARIANT_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
DEFAULT_LANGUAGES = ("en",)  # what a manifest without "languages" means: every bundle before the field
CALIBRATION_METHOD = "temperature"
TEMPERATURE_RANGE = (0.05, 20.0)  # outside it a fit went wrong: 20 flattens any logits to near-uniform


class BundleError(ValueError):
    """A bundle that must not be served; the message says which check failed."""


@dataclass(frozen=True)
class TaskSpec:
    name: str
    labels: tuple[str, ...]
    output: str


@dataclass(frozen=True)
class Bundle:
    path: Path
    name: str
    version: str
    sha256: str  # of the ONNX file that will be served
    model_file: Path
    variant: str
    tokenizer_file: Path
    max_length: int
    tasks: dict[str, TaskSpec]
    manifest: dict[str, Any] = field(repr=False)
    languages: tuple[str, ...] = DEFAULT_LANGUAGES
    temperatures: dict[str, dict[str, float]] = field(default_factory=dict)  # task -> language -> T

    @property
    def ident(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256}


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def hash_files(directory: Path, exclude: tuple[str, ...] = (MANIFEST,)) -> dict[str, str]:
    """sha256 of every regular file under `directory` (relative POSIX paths)."""
    out: dict[str, str] = {}
    for p in sorted(directory.rglob("*")):
        rel = p.relative_to(directory).as_posix()
        if p.is_file() and rel not in exclude:
            out[rel] = sha256_file(p)
    return out


def write_manifest(directory: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Fill in format, normalisation version and file hashes, then write manifest.json."""
    directory = Path(directory)
    full = dict(manifest)
    full.setdefault("format", FORMAT_VERSION)
    full.setdefault("normalization_version", NORMALIZATION_VERSION)
    full["files"] = hash_files(directory)
    validate_manifest(full)
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(full, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, directory / MANIFEST)
    return full


def validate_manifest(m: dict[str, Any]) -> None:
    """Structural checks that need no files: names, tasks, label lists."""
    for key in ("name", "version", "tasks", "max_length", "files"):
        if key not in m:
            raise BundleError(f"manifest.json lacks '{key}'")
    if m.get("format", FORMAT_VERSION) != FORMAT_VERSION:
        raise BundleError(f"manifest format {m.get('format')} is not supported (expected {FORMAT_VERSION})")
    tasks = m["tasks"]
    if not isinstance(tasks, dict) or not tasks:
        raise BundleError("manifest.json 'tasks' must be a non-empty object")
    for name, spec in tasks.items():
        labels = spec.get("labels") if isinstance(spec, dict) else None
        if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) for x in labels):
            raise BundleError(f"task '{name}' needs a list of at least two string labels")
        if len(set(labels)) != len(labels):
            raise BundleError(f"task '{name}' has duplicate labels")
    if "sentiment" in tasks and tuple(tasks["sentiment"]["labels"]) != SENTIMENT_LABELS:
        raise BundleError(
            f"task 'sentiment' labels must be {list(SENTIMENT_LABELS)}, got {tasks['sentiment']['labels']}"
        )
    if not isinstance(m["max_length"], int) or not 8 <= m["max_length"] <= 4096:
        raise BundleError("manifest.json 'max_length' must be an integer in [8, 4096]")
    langs = m.get("languages", list(DEFAULT_LANGUAGES))
    if (not isinstance(langs, list) or not langs or len(set(langs)) != len(langs)
            or not all(isinstance(x, str) and x.strip() == x and 2 <= len(x) <= 8 for x in langs)):  # fmt: skip
        raise BundleError(
            f"manifest.json 'languages' must be a non-empty list of distinct language codes, got {langs!r}"
        )
    if "calibration" in m:
        manifest_temperatures(m)


def manifest_temperatures(m: dict[str, Any]) -> dict[str, dict[str, float]]:
    """task -> language -> temperature from manifest["calibration"], checked; {} when there is none."""
    cal = m.get("calibration")
    if cal is None:
        return {}
    if not isinstance(cal, dict) or cal.get("method") != CALIBRATION_METHOD:
        raise BundleError(f"manifest.json 'calibration' must be an object with method '{CALIBRATION_METHOD}'")
    temps = cal.get("temperature")
    if not isinstance(temps, dict):
        raise BundleError("manifest.json 'calibration.temperature' must map task -> language -> temperature")
    langs = m.get("languages", list(DEFAULT_LANGUAGES))
    lo, hi = TEMPERATURE_RANGE
    out: dict[str, dict[str, float]] = {}
    for task, per_lang in temps.items():
        if task not in m["tasks"] or not isinstance(per_lang, dict):
            raise BundleError(f"manifest.json calibration names task '{task}', which the bundle lacks")
        for lang, t in per_lang.items():
            if lang not in langs:
                raise BundleError(f"manifest.json calibration names language '{lang}', which the bundle lacks")
            if isinstance(t, bool) or not isinstance(t, int | float) or not lo <= t <= hi:
                raise BundleError(f"manifest.json calibration temperature {task}/{lang} must be a number in "
                                  f"[{lo}, {hi}], got {t!r}")  # fmt: skip
            out.setdefault(task, {})[lang] = float(t)
    return out


def load_bundle(path: str | os.PathLike[str], variant: str = "auto", verify: bool = True) -> Bundle:
    """Read and verify a bundle directory.

    variant: "int8", "fp32" or "auto" (int8 when present, else fp32).
    """
    root = Path(path)
    mpath = root / MANIFEST
    if not root.is_dir():
        raise BundleError(f"model bundle {root} is not a directory")
    if not mpath.is_file():
        raise BundleError(f"model bundle {root} has no {MANIFEST}")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{mpath} is not readable JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"{mpath} must hold a JSON object")
    validate_manifest(manifest)
    if manifest.get("normalization_version") != NORMALIZATION_VERSION:
        raise BundleError(
            f"bundle was trained with text normalisation v{manifest.get('normalization_version')}, "
            f"this worker applies v{NORMALIZATION_VERSION}"
        )
    files: dict[str, str] = manifest["files"]
    if variant == "auto":
        variant = "int8" if VARIANT_FILES["int8"] in files else "fp32"
    if variant not in VARIANT_FILES:
        raise BundleError(f"unknown model variant '{variant}' (choose int8, fp32 or auto)")
    model_name = VARIANT_FILES[variant]
    if model_name not in files:
        raise BundleError(f"bundle {root} has no {model_name} (variant {variant})")
    tok_name = manifest.get("tokenizer", "tokenizer.json")
    if tok_name not in files:
        raise BundleError(f"bundle {root} lists no tokenizer file '{tok_name}'")
    if verify:
        for rel, expected in files.items():
            fp = root / rel
            if not fp.is_file():
                raise BundleError(f"bundle file {rel} is missing")
            actual = sha256_file(fp)
            if actual != expected:
                raise BundleError(f"bundle file {rel} has sha256 {actual[:12]}…, manifest says {expected[:12]}…")
    tasks = {
        name: TaskSpec(name=name, labels=tuple(spec["labels"]), output=spec.get("output", f"{name}_logits"))
        for name, spec in manifest["tasks"].items()
    }
    return Bundle(
        path=root,
        name=str(manifest["name"]),
        version=str(manifest["version"]),
        sha256=files[model_name],
        model_file=root / model_name,
        variant=variant,
        tokenizer_file=root / tok_name,
        max_length=int(manifest["max_length"]),
        tasks=tasks,
        manifest=manifest,
        languages=tuple(manifest.get("languages", DEFAULT_LANGUAGES)),
        temperatures=manifest_temperatures(manifest),
    )


PAD_TOKENS = ("[PAD]", "<pad>")  # BERT / WordPiece, and XLM-R / sentencepiece (e5: "<pad>" is id 1, "<s>" id 0)


def tokenizer_pad_id(tokenizer: Any) -> int:
    """The pad id a `tokenizers.Tokenizer` declares, read before padding is switched off.

    Part of the bundle format, so the worker's scorer and the training runner pad alike.
    tokenizer.json's padding section (written by `finsent-train export`) wins, then the vocabulary's
    pad token. Looking up "[PAD]" only and falling back to 0 padded e5 batches with "<s>" (id 0)
    instead of "<pad>" (id 1); attention masks hide those positions, but the padded ids must be the
    ones the model was trained and exported with.
    """
    padding = tokenizer.padding
    if padding and padding.get("pad_id") is not None:
        return int(padding["pad_id"])
    for token in PAD_TOKENS:
        found = tokenizer.token_to_id(token)
        if found is not None:
            return int(found)
    return 0
