"""The one text normalisation of training and serving: English, Chinese, version pinning."""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

import pytest

from monitor.model.normalize import normalize_text


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Exxon &amp;amp; more", "Exxon & more"),
        ("Apple  beats\n\testimates", "Apple beats estimates"),
        ("see https://t.co/abc123 now", "see url now"),
        ("Sepp\u00c3\u00a4l\u00c3\u00a4 wins", "Seppälä wins"),
        ("bad\x00byte\x1b[31m", "badbyte[31m"),
        ("ｆｕｌｌｗｉｄｔｈ", "fullwidth"),
        ("股市大跌 📉", "股市大跌 📉"),
        ("  ", ""),
    ],
)
def test_normalize(raw: str, clean: str) -> None:
    assert normalize_text(raw) == clean


def test_idempotent() -> None:
    s = "Tesla &amp; $TSLA fall https://x.y/z  \u200b"
    once = normalize_text(s)
    assert normalize_text(once) == once


# Chinese: full-width forms to half-width (NFKC), ideographic punctuation kept, whitespace collapsed only.
@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("ＡＢＣ１２３％上涨", "ABC123%上涨"),
        ("主力太傻了，每天跌这么点谁割啊！", "主力太傻了,每天跌这么点谁割啊!"),
        ("Take-Two（NASQ：TTWO）宣布收购；", "Take-Two(NASQ:TTWO)宣布收购;"),
        ("明天大概率平盘？", "明天大概率平盘?"),
        ("苹果公司已提交合规计划。", "苹果公司已提交合规计划。"),
        ("光伏、风电大规模利用", "光伏、风电大规模利用"),
        ("【市场评论：投资者已消化CPI高预期 美债仍受追捧】", "【市场评论:投资者已消化CPI高预期 美债仍受追捧】"),
        ("《上海市人工智能产业发展规划》", "《上海市人工智能产业发展规划》"),
        ("“多元方程”", "“多元方程”"),
        ("股市\u3000\u3000大跌\n\n明天 见", "股市 大跌 明天 见"),
        ("半角｡､｢好｣", "半角。、「好」"),
        ("臺灣股市 台湾股市", "臺灣股市 台湾股市"),
        ("补仓\u200b补的心力憔悴", "补仓补的心力憔悴"),
        ("详见 https://t.cn/abc 。", "详见 url 。"),
    ],
)
def test_normalize_chinese(raw: str, clean: str) -> None:
    assert normalize_text(raw) == clean
    assert normalize_text(clean) == clean


def test_version_unchanged_and_shipped_bundle_loads() -> None:
    """Chinese support changed no output, so the version stays and the shipped English bundle is served."""
    from monitor.model.bundle import load_bundle
    from monitor.model.normalize import NORMALIZATION_VERSION

    assert NORMALIZATION_VERSION == "1"
    shipped = Path(__file__).resolve().parent.parent / "models" / "finsent-minilm-l6"
    if not (shipped / "manifest.json").is_file():
        pytest.skip("shipped bundle not present")
    b = load_bundle(shipped, verify=False)
    assert b.manifest["normalization_version"] == NORMALIZATION_VERSION


# sha256 prefixes of every normalised text (joined by \x1e) of the shared files the shipped bundle and the
# multilingual recipe train or evaluate on, with their row counts: English (and Chinese) text must
# normalise exactly as it did when these were pinned. A changed data file (other row count) is skipped.
PINNED = {
    "twitter_financial_news_sentiment/train.csv": (9543, "368d220d3d79a9f5"),
    "twitter_financial_news_sentiment/valid.csv": (1790, "fbb1996414cb81b6"),
    "twitter_financial_news_topic/train.csv": (16990, "1aa813bdb42389b3"),
    "twitter_financial_news_topic/valid.csv": (3089, "892972510748503a"),
    "sentfin_headlines/train.csv": (5162, "e270c92eb6e02296"),
    "sentfin_headlines/valid.csv": (985, "c23eefbb2b396c3c"),
    "financial_phrasebank/sentences_75agree.csv": (3453, "0dc0375ecfedabac"),
    "chinese_bbt_finfe_sentiment/train_dedup.csv": (9781, "373fffbbb572677e"),
    "chinese_bbt_finnl_news_topic/train.csv": (7071, "a11dc02d2467bc39"),
}


@pytest.mark.parametrize("rel", sorted(PINNED))
def test_dataset_normalisation_pinned(rel: str) -> None:
    datasets = Path(os.environ.get("FINSENT_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    f = datasets / rel
    if not f.is_file():
        pytest.skip(f"{f} not present")
    with open(f, encoding="utf-8", newline="") as fh:
        texts = [r["text"] for r in csv.DictReader(fh)]
    rows, digest = PINNED[rel]
    if len(texts) != rows:
        pytest.skip(f"{rel} has {len(texts)} rows, pinned with {rows}: the data changed, not the normalisation")
    h = hashlib.sha256()
    for t in texts:
        h.update(normalize_text(t).encode() + b"\x1e")
    assert h.hexdigest()[:16] == digest, f"normalize_text output changed on {rel}: bump NORMALIZATION_VERSION"
