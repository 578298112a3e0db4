"""Trim a SentencePiece-Unigram vocabulary (tokenizer.json) to the pieces a corpus uses.

multilingual-e5-small spends 96M of its 118M parameters on a 250k-piece
vocabulary for ~100 languages. Keeping the pieces the training corpora use
(plus the specials and the best-scored pieces up to a cap) keeps the
segmentation of the corpora identical and shrinks model and export.

The kept ids stay in their original order, so the specials keep their ids
(<s> 0, <pad> 1, </s> 2, <unk> 3) and the new id of a piece is its rank in
`keep`. The lowest-scored piece is always kept: the Unigram unknown score is
(minimum piece score - 10), and keeping it keeps that score, hence the
trade-off between unknown and real pieces, the same as in the full model.

    python -m training.vocab_trim report [--cap N ...]   # held-out agreement and unk rates
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# Text columns used to choose the vocabulary (train splits; the valid splits are the held-out check).
TRIM_CORPORA = (
    "twitter_financial_news_sentiment", "twitter_financial_news_topic", "sentfin_headlines",
    "chinese_bbt_finfe_sentiment", "chinese_bbt_finnl_news_topic",
)  # fmt: skip
CHINESE_CORPORA = ("chinese_bbt_finfe_sentiment", "chinese_bbt_finnl_news_topic")
PREFIXES = ("query: ", "passage: ")


def corpus_files(root: Path, names: Sequence[str], split: str) -> list[Path]:
    """One CSV per corpus: `{split}_dedup.csv` where it exists (FinFE: its published train repeats valid texts)."""
    files = []
    for n in names:
        d = root / n
        p = d / f"{split}_dedup.csv" if (d / f"{split}_dedup.csv").is_file() else d / f"{split}.csv"
        if not p.is_file():
            raise FileNotFoundError(f"{p} missing (set FINSENT_DATASETS)")
        files.append(p)
    return files


def read_texts(files: Iterable[Path]) -> list[str]:
    """The `text` column, normalised as training and serving see it (monitor.model.normalize)."""
    from monitor.model.normalize import normalize_text

    csv.field_size_limit(16 * 1024 * 1024)
    out = []
    for p in files:
        with open(p, encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                t = normalize_text(row.get("text") or "")
                if t:
                    out.append(t)
    return out


def _tokenizer(tj: dict[str, Any]) -> Any:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(json.dumps(tj))
    tok.no_padding()
    tok.no_truncation()
    return tok


def encode_ids(tj: dict[str, Any], texts: Sequence[str]) -> list[list[int]]:
    """Token ids with the special tokens, no truncation."""
    return [e.ids for e in _tokenizer(tj).encode_batch(list(texts))]


def used_piece_ids(tj: dict[str, Any], texts: Sequence[str], prefixes: Sequence[str] = PREFIXES) -> Counter[int]:
    """How often each piece id occurs in the texts (and in the e5 prefixes)."""
    c: Counter[int] = Counter()
    for ids in encode_ids(tj, [*prefixes, *texts]):
        c.update(ids)
    return c


def covered_char(ch: str) -> bool:
    """Characters of the target languages whose single-character piece is always kept: Han, Latin, digits,
    punctuation and symbols (emoji). A held-out text then falls back to characters, never to <unk>."""
    cp = ord(ch)
    if 0x2E80 <= cp <= 0x9FFF or 0xF900 <= cp <= 0xFAFF or 0xFF00 <= cp <= 0xFFEF or 0x20000 <= cp <= 0x2FFFF:
        return True
    return cp < 0x250 or unicodedata.category(ch)[0] in "PSN"


def select_keep(tj: dict[str, Any], used: Iterable[int], cap: int, cover: bool = True) -> np.ndarray:
    """Old ids to keep, ascending: specials, the used pieces, the lowest-scored piece, the single-character
    pieces of `covered_char` (when `cover`), then the best-scored pieces up to `cap`.

    Everything before the best-scored fill is kept even beyond the cap.
    """
    vocab = tj["model"]["vocab"]
    scores = np.array([s for _, s in vocab], dtype=np.float64)
    must = {int(tj["model"]["unk_id"]), *(int(a["id"]) for a in tj.get("added_tokens", [])), *map(int, used)}
    must.add(int(np.argmin(scores)))
    if cover:
        for i, (p, _) in enumerate(vocab):
            c = p.removeprefix("\u2581")
            if len(c) == 1 and covered_char(c):
                must.add(i)
    keep = set(must)
    for i in np.argsort(-scores, kind="stable"):
        if len(keep) >= cap:
            break
        keep.add(int(i))
    return np.array(sorted(keep), dtype=np.int64)


def trim_tokenizer_json(tj: dict[str, Any], keep: np.ndarray) -> dict[str, Any]:
    """A tokenizer.json with only the `keep` pieces, re-indexed 0..len(keep)-1 in the same order."""
    m = tj["model"]
    if m.get("type") != "Unigram":
        raise ValueError(f"only Unigram tokenizers can be trimmed, not {m.get('type')}")
    if len(keep) and (np.any(np.diff(keep) <= 0) or keep[0] < 0 or keep[-1] >= len(m["vocab"])):
        raise ValueError("keep must be ascending, unique, valid ids")
    remap = {int(old): new for new, old in enumerate(keep)}

    def new_id(old: int, what: str) -> int:
        if int(old) not in remap:
            raise ValueError(f"{what} (id {old}) is not in the kept vocabulary")
        return remap[int(old)]

    out = copy.deepcopy({k: v for k, v in tj.items() if k != "model"})
    out["model"] = {k: v for k, v in m.items() if k != "vocab"}
    out["model"]["vocab"] = [list(m["vocab"][i]) for i in keep]
    out["model"]["unk_id"] = new_id(m["unk_id"], "unk")
    for a in out.get("added_tokens") or []:
        a["id"] = new_id(a["id"], a["content"])
    pp = out.get("post_processor") or {}
    for proc in pp.get("processors", [pp]):
        if proc.get("type") == "TemplateProcessing":
            for st in proc["special_tokens"].values():
                st["ids"] = [new_id(i, st["id"]) for i in st["ids"]]
        elif proc.get("type") in ("RobertaProcessing", "BertProcessing"):
            for k in ("sep", "cls"):
                proc[k] = [proc[k][0], new_id(proc[k][1], proc[k][0])]
    if out.get("padding"):
        out["padding"]["pad_id"] = new_id(out["padding"]["pad_id"], "padding")
    # the new vocab must still map each piece to its id
    pieces = [p for p, _ in out["model"]["vocab"]]
    if len(set(pieces)) != len(pieces):
        raise ValueError("duplicate pieces in the trimmed vocabulary")
    return out


def compare(full: dict[str, Any], trimmed: dict[str, Any], keep: np.ndarray, texts: Sequence[str]) -> dict[str, Any]:
    """Held-out agreement: texts whose pieces are identical, and token-level unk rates of both tokenizers."""
    a = encode_ids(full, texts)
    b = encode_ids(trimmed, texts)
    unk_full, unk_trim = int(full["model"]["unk_id"]), int(trimmed["model"]["unk_id"])
    same = sum(x == [int(keep[i]) for i in y] for x, y in zip(a, b, strict=True))
    n_a, n_b = sum(map(len, a)) or 1, sum(map(len, b)) or 1
    return {
        "texts": len(texts),
        "identical_pieces": round(same / max(1, len(texts)), 5),
        "unk_rate_full": round(sum(x.count(unk_full) for x in a) / n_a, 6),
        "unk_rate_trimmed": round(sum(y.count(unk_trim) for y in b) / n_b, 6),
        "texts_with_unk_trimmed": round(sum(unk_trim in y for y in b) / max(1, len(texts)), 5),
        "tokens_per_text_full": round(n_a / max(1, len(texts)), 2),
        "tokens_per_text_trimmed": round(n_b / max(1, len(texts)), 2),
    }


def report(tokenizer_file: Path, root: Path, caps: Sequence[int], cover: bool = True) -> dict[str, Any]:
    """Trim to the train splits for each cap; check on the valid splits (texts not in any train split)."""
    tj = json.loads(tokenizer_file.read_text(encoding="utf-8"))
    train = read_texts(corpus_files(root, TRIM_CORPORA, "train"))
    seen = set(train)
    used = used_piece_ids(tj, train)
    held: dict[str, list[str]] = {}
    for lang, names in (("zh", CHINESE_CORPORA), ("en", [n for n in TRIM_CORPORA if n not in CHINESE_CORPORA])):
        held[lang] = [t for t in read_texts(corpus_files(root, names, "valid")) if t not in seen]
    res: dict[str, Any] = {"train_texts": len(train), "pieces_used": len(used), "full_vocab": len(tj["model"]["vocab"])}
    for cap in caps:
        keep = select_keep(tj, used, cap, cover)
        trimmed = trim_tokenizer_json(tj, keep)
        on_train = compare(tj, trimmed, keep, train)["identical_pieces"]
        res[f"cap {cap}"] = {"vocab": len(keep), "train_identical_pieces": on_train,
                             **{lang: compare(tj, trimmed, keep, t) for lang, t in held.items()}}  # fmt: skip
    return res


def main(argv: list[str] | None = None) -> int:
    from training.e5_rebuild import datasets_dir, package_files

    ap = argparse.ArgumentParser(prog="python -m training.vocab_trim", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("report", help="held-out piece agreement and unk rates for some caps")
    r.add_argument("--cap", type=int, nargs="+", default=[0, 20_000, 40_000, 60_000])
    r.add_argument("--tokenizer", type=Path, default=None, help="default: the e5 tokenizer.json from its package")
    r.add_argument("--datasets", type=Path, default=None)
    r.add_argument("--no-cover", action="store_true", help="do not keep the Han/Latin/symbol single characters")
    args = ap.parse_args(argv)
    tok = args.tokenizer or package_files()[1]
    print(json.dumps(report(tok, args.datasets or datasets_dir(), args.cap, not args.no_cover), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
