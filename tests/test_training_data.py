"""Loading labeled data: formats, label mapping, bad rows, clear errors."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from monitor.model.bundle import SENTIMENT_LABELS
from training.data import TOPIC_LABELS, DataError, load_examples, map_label
from training.metrics import classification_report, expected_calibration_error


@pytest.mark.parametrize(
    ("raw", "want"),
    [("Bearish", "negative"), ("bullish", "positive"), ("Neutral", "neutral"), ("0", "negative"),
     ("1", "positive"), ("2", "neutral"), ("negative", "negative"), ("meh", None), (None, None)],
)  # fmt: skip
def test_sentiment_label_mapping(raw: object, want: str | None) -> None:
    assert map_label("sentiment", raw) == want


def test_topic_labels_by_name_or_index() -> None:
    assert map_label("topic", "Earnings") == "Earnings"
    assert map_label("topic", "5") == "Earnings"
    assert map_label("topic", "Sports") is None


def test_csv_bad_rows_counted_and_text_normalised(tmp_path: Path) -> None:
    f = tmp_path / "s.csv"
    f.write_text(
        "text,label\n"
        '"Stocks fall &amp; bonds rally https://t.co/x",Bearish\n'
        '"",Bullish\n'
        '"   ",Neutral\n'
        '"Great quarter",Ecstatic\n'
        '"Fine day",2\n',
        encoding="utf-8",
    )
    ex = load_examples(f, "sentiment")
    assert ex.texts == ["Stocks fall & bonds rally url", "Fine day"]
    assert ex.labels == [0, 1]
    assert ex.skipped == {"empty_text": 2, "unknown_label": 1}
    assert ex.fingerprint() == load_examples(f, "sentiment").fingerprint()


def test_jsonl_with_custom_columns(tmp_path: Path) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text(
        "\n".join(json.dumps(r) for r in [{"body": "Fed hikes", "y": "Fed | Central Banks"}, {"body": "x"}])
        + "\nnot json\n"
    )
    ex = load_examples(f, "topic", text_col="body", label_col="y")
    assert ex.texts == ["Fed hikes"] and ex.skipped["unknown_label"] == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "does not exist"), (b"\xff\xfe\x00bad", "not UTF-8"), (b"a,b\n1,2\n", "no column 'text'"),
     (b"text,label\nhello,nonsense\n", "no usable rows")],
)  # fmt: skip
def test_unusable_files_fail_with_one_line(tmp_path: Path, content: bytes | None, message: str) -> None:
    f = tmp_path / "d.csv"
    if content is not None:
        f.write_bytes(content)
    with pytest.raises(DataError, match=message) as exc:
        load_examples(f, "sentiment")
    assert "\n" not in str(exc.value)


def test_metrics_known_values() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    rep = classification_report(probs, [0, 1, 1, 1], ["a", "b"])
    assert rep["accuracy"] == 0.75
    assert rep["confusion"] == [[1, 0], [1, 2]]
    assert rep["per_class"]["a"]["precision"] == 0.5 and rep["per_class"]["b"]["recall"] == pytest.approx(
        0.6667, abs=1e-3
    )
    assert rep["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2, abs=1e-3)
    perfect = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(perfect, np.array([0, 1])) == pytest.approx(0.0)


def test_parquet_rows_and_unreadable_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    f = tmp_path / "s.parquet"
    pq.write_table(pa.table({"text": ["Stocks rally", "", "Bonds slip"], "label": [1, 2, 0]}), f)
    ex = load_examples(f, "sentiment")
    assert ex.texts == ["Stocks rally", "Bonds slip"] and ex.labels == [2, 0] and ex.skipped["empty_text"] == 1
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="Parquet"):
        load_examples(bad, "sentiment")


def test_batch_plan_covers_rows_and_balances_tasks() -> None:
    import random

    from training.data import Examples
    from training.train import plan_batches

    sets = {
        "topic": Examples("topic", ["t"] * 40, [0] * 40, "a"),
        "sentiment": Examples("sentiment", ["s"] * 10, [0] * 10, "b"),
    }
    plain = plan_batches(sets, 8, random.Random(1))
    assert sorted(i for t, b in plain if t == "sentiment" for i in b) == list(range(10))
    assert sum(len(b) for t, b in plain if t == "topic") == 40
    balanced = plan_batches(sets, 8, random.Random(1), balanced=True)
    sent = [i for t, b in balanced if t == "sentiment" for i in b]
    assert len(sent) == 40 and set(sent) == set(range(10))
    assert plan_batches(sets, 8, random.Random(1)) == plain  # seeded


# ---- named sources, taxonomy, recipes (training/sources.py, training/taxonomy.py) ----

SHARED = Path(os.environ.get("FINSENT_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets"))


def _fake_datasets(root: Path) -> Path:
    """Small files shaped like the shared ones (same folders, names and columns)."""
    files = {
        "twitter_financial_news_sentiment/train.csv": 'text,label\n"Stocks slide",Bearish\n"Stocks jump",Bullish\n'
        '"Flat day",Neutral\n"Bonds drop",0\n',
        "twitter_financial_news_sentiment/valid.csv": 'text,label\n"Shares sink",Bearish\n"Shares soar",Bullish\n',
        "twitter_financial_news_topic/train.csv": 'text,label\n"Fed hikes",Fed | Central Banks\n"Q3 EPS beat",Earnings\n',
        "twitter_financial_news_topic/valid.csv": 'text,label\n"ECB holds",Fed | Central Banks\n"Q2 revenue",5\n',
        "sentfin_headlines/train.csv": "text,label,n_entities\nSpiceJet to issue warrants,neutral,1\n"
        "Mid caps turn market darlings,positive,1\nMMTC net loss widens,negative,2\nAmbiguous,2,1\n",
        "sentfin_headlines/valid.csv": "text,label,n_entities\nSensex rallies,positive,1\nNifty slips,negative,1\n",
        "chinese_bbt_finfe_sentiment/train_dedup.csv": "text,label,label_zh\n补仓补的心力憔悴,negative,消极\n"
        "明天大概率平盘，必竞应有说法！,neutral,中性\n试仓500股，看看门道！,positive,积极\n主力太傻了,0,消极\n",
        "chinese_bbt_finfe_sentiment/valid_dedup.csv": "text,label,label_zh\n跌停了,negative,消极\n涨停了,positive,积极\n",
        "chinese_bbt_finnl_news_topic/train.csv": "text,label\n"
        "市场消息：韩国监管机构表示，苹果公司已提交合规计划。,外国|公司\n"
        "瑞信：将华熙生物评级下调至中性，目标价170元。,中国|公司\n"
        "COMEX期金突破1800美元/盎司，日内涨0.17%。,国际|期货\n"
        "美联储戴利：通货膨胀是一种压抑性的税收。,外国|经济\n"
        "巴西最近24小时新增8430例新冠肺炎病例。,外国|新冠\n"
        "比特币站上42000美元/枚。,外国|虚拟货币\n"
        "某公司受疫情影响停产。,中国|公司|新冠\n"
        "某公司与经济数据。,中国|公司|经济\n"
        "北向资金净买额达30亿元。,中国大盘\n"
        "无意义。,中国|奇怪\n",
        "chinese_bbt_finnl_news_topic/valid.csv": "text,label\n美国10年期国债收益率触及1.771%。,外国|债券\n"
        "英镑兑美元GBP/USD涨0.5%。,外国|外汇\n",
        "financial_phrasebank/sentences_75agree.csv": "text,label\nProfit rose .,positive\nSales fell .,negative\n",
    }
    for rel, body in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(body, encoding="utf-8")
    return root


def test_sources_label_maps_language_and_origin(tmp_path: Path) -> None:
    from training.sources import load_source

    d = _fake_datasets(tmp_path)
    finfe = load_source("finfe", "train", d)
    # FinFE's 0 is negative as in the twitter set, but its 1/2 are neutral/positive (the twitter set: 1 Bullish).
    assert [SENTIMENT_LABELS[y] for y in finfe.labels] == ["negative", "neutral", "positive", "negative"]
    assert finfe.texts[1] == "明天大概率平盘,必竞应有说法!"  # shared normalisation: full-width to half-width
    assert finfe.langs == ["zh"] * 4 and finfe.origins == ["finfe"] * 4 and finfe.source == "finfe"
    sentfin = load_source("sentfin", "train", d)
    assert [SENTIMENT_LABELS[y] for y in sentfin.labels] == ["neutral", "positive", "negative"]
    assert sentfin.skipped == {"unknown_label": 1}  # a bare "2" means nothing without the dataset's own order
    tweets = load_source("tweets_sentiment", "train", d)
    assert [SENTIMENT_LABELS[y] for y in tweets.labels] == ["negative", "positive", "neutral", "negative"]
    assert set(tweets.langs) == {"en"}
    topic = load_source("tweets_topic", "valid", d)
    assert [TOPIC_LABELS[y] for y in topic.labels] == ["Fed | Central Banks", "Earnings"]


def test_finnl_source_goes_through_the_taxonomy(tmp_path: Path) -> None:
    from training.sources import load_source

    ex = load_source("finnl", "train", _fake_datasets(tmp_path))
    assert [TOPIC_LABELS[y] for y in ex.labels] == [
        "Company | Product News", "Analyst Update", "Gold | Metals | Materials", "Fed | Central Banks",
        "Company | Product News", "Markets",
    ]  # fmt: skip
    assert ex.skipped == {"finnl_secondary_only": 1, "finnl_dropped_tag": 1, "finnl_conflict": 1,
                          "finnl_no_topic_tag": 1}  # fmt: skip
    assert set(ex.langs) == {"zh"}


def test_phrasebank_is_evaluation_only_and_limits_are_seeded(tmp_path: Path) -> None:
    from training.sources import load_source

    d = _fake_datasets(tmp_path)
    with pytest.raises(DataError, match="evaluation-only"):
        load_source("phrasebank", "train", d)
    assert len(load_source("phrasebank", "valid", d).texts) == 2
    with pytest.raises(DataError, match="unknown source"):
        load_source("reddit", "train", d)
    a, b = load_source("finfe", "train", d, limit=2), load_source("finfe", "train", d, limit=2)
    assert a.texts == b.texts and len(a.texts) == 2 and len(a.langs) == len(a.origins) == 2


def test_mix_scales_sources_by_weight() -> None:
    from training.data import Examples
    from training.sources import mix

    en = Examples("sentiment", [f"e{i}" for i in range(10)], [0] * 10, "tweets", langs=["en"] * 10,
                  origins=["tweets"] * 10)  # fmt: skip
    zh = Examples("sentiment", [f"z{i}" for i in range(4)], [2] * 4, "finfe", langs=["zh"] * 4, origins=["finfe"] * 4)
    m = mix([(en, 0.5), (zh, 1.5)], seed=3)
    assert m.langs.count("en") == 5 and m.langs.count("zh") == 6
    assert set(m.texts[5:]) == {"z0", "z1", "z2", "z3"} and m.origins.count("finfe") == 6
    assert mix([(en, 0.5), (zh, 1.5)], seed=3).texts == m.texts  # seeded
    with pytest.raises(DataError, match="different tasks"):
        mix([(en, 1.0), (Examples("topic", ["t"], [0], "x"), 1.0)], seed=0)
    with pytest.raises(DataError, match="positive"):
        mix([(en, 0.0)], seed=0)


def test_multilingual_recipe_and_toml_recipes(tmp_path: Path) -> None:
    from training.sources import RECIPES, load_recipe, recipe_sets

    r = load_recipe("multilingual")
    assert r.backbone == "e5-small-multilingual" and r.tasks == ("sentiment", "topic")
    assert dict(r.train["sentiment"]).keys() == {"tweets_sentiment", "sentfin", "finfe"}
    assert dict(r.train["topic"]).keys() == {"tweets_topic", "finnl"}
    train, valid = recipe_sets(r, _fake_datasets(tmp_path), seed=1)
    assert sorted(valid) == ["finfe_valid", "finnl_valid", "sentfin_valid", "tweets_sentiment_valid",
                             "tweets_topic_valid"]  # fmt: skip
    assert set(train["topic"].langs) == {"en", "zh"} and set(train["topic"].origins) == {"tweets_topic", "finnl"}
    assert valid["finnl_valid"].task == "topic" and valid["finnl_valid"].langs == ["zh", "zh"]
    en = load_recipe("english")
    en_train, en_valid = recipe_sets(en, _fake_datasets(tmp_path), seed=1)
    assert sorted(en_valid) == ["sentfin_valid", "tweets_sentiment_valid", "tweets_topic_valid"]
    assert {lang for ex in en_train.values() for lang in ex.langs} == {"en"}
    assert set(en_train["sentiment"].origins) == {"tweets_sentiment", "sentfin"}
    teacher = load_recipe("english-teacher")
    assert teacher.tasks == ("sentiment",) and teacher.train["sentiment"] == en.train["sentiment"]
    f = tmp_path / "mine.toml"
    f.write_text('backbone = "x"\nmax_length = 32\n[train.sentiment]\nfinfe = 2.0\n[valid]\nsentiment = ["finfe"]\n')
    mine = load_recipe(str(f))
    assert mine.name == "mine" and mine.train == {"sentiment": (("finfe", 2.0),)} and mine.max_length == 32
    assert (mine.int8_method, mine.int8_compute, mine.int8_fp32_matmuls) == ("dynamic-smooth", "fp32", None)
    assert mine.patience == 3
    f.write_text('backbone = "x"\nint8_method = "dynamic-smooth"\nint8_fp32_matmuls = "layer\\\\.0/"\n'
                 'patience = 8\n[train.sentiment]\nfinfe = 1.0\n')  # fmt: skip
    assert load_recipe(str(f)).int8_fp32_matmuls == "layer\\.0/" and load_recipe(str(f)).patience == 8
    for body, msg in [('backbone = "x"\n[train.topic]\nfinfe = 1.0\n', "not a topic source"),
                      ('backbone = "x"\nint8_method = "int4"\n[train.sentiment]\nfinfe = 1.0\n',
                       "unknown int8_method 'int4'"),
                      ('backbone = "x"\nint8_compute = "fp16"\n[train.sentiment]\nfinfe = 1.0\n',
                       "unknown int8_compute 'fp16'"),
                      ('backbone = "x"\n[train.sentiment]\nphrasebank = 1.0\n', "evaluation-only"),
                      ("backbone = [\n", "not a valid recipe")]:  # fmt: skip
        f.write_text(body)
        with pytest.raises(DataError, match=msg):
            load_recipe(str(f))
    with pytest.raises(DataError, match="unknown recipe"):
        load_recipe("nope")
    assert "default" not in RECIPES  # the plain CLI path is the default recipe, unchanged


@pytest.mark.parametrize(
    ("label", "text", "topic", "reason"),
    [("外国|公司", "苹果公司已提交合规计划。", "Company | Product News", "mapped"),
     ("中国|公司", "西藏珠峰：预计2021年净利润为7亿元", "Earnings", "mapped"),
     ("中国|公司", "T-Mobile将收购Octopus Interactive。", "M&A | Investments", "mapped"),
     ("中国|公司", "德盈控股申请香港IPO，拟全球发售1.2亿股", "IPO", "mapped"),
     ("中国|公司", "【敦煌种业：董事长马宗海辞职】", "Personnel Change", "mapped"),
     ("外国|经济", "英国12月份服务业经营活动指数报53.6。", "Macro", "mapped"),
     ("外国|经济", "智利央行会议纪要：需要加息至6%。", "Fed | Central Banks", "mapped"),
     ("中国|政策", "上交所发布科创板自律监管指南。", "Legal | Regulation", "mapped"),
     ("国际|期货", "WTI原油期货短线上扬逾0.3美元。", "Energy | Oil", "mapped"),
     ("中国|期货", "恒指期货日盘开跌0.26%。", "Markets", "mapped"),
     ("外国|大盘", "欧股基本平开。", "Markets", "mapped"),
     ("外国|债券", "美国10年期国债收益率触及1.771%。", "Treasuries | Corporate Debt", "mapped"),
     ("外国|外汇", "美元指数DXY日内转涨。", "Currencies", "mapped"),
     ("外国|能源", "美国战略石油储备库存下降。", "Energy | Oil", "mapped"),
     ("外国|政治", "总统表示将撤离。", "Politics", "mapped"),
     ("中国|房地产", "深圳租金持续下跌。", "Macro", "mapped"),
     ("外国|新冠|经济", "疫情拖累经济增长。", "Macro", "mapped"),
     ("中国|行业|公司", "某公司发布新品。", "Company | Product News", "mapped"),
     ("外国债券", "国债收益率上升。", "Treasuries | Corporate Debt", "mapped"),
     ("中国|公司、", "某公司发布新品。", "Company | Product News", "mapped"),
     ("国际|虚拟火币", "比特币下跌。", None, "dropped_tag"),
     ("外国|新冠", "比利时缩短隔离期。", None, "secondary_only"),
     ("中国|行业", "定制服装市场规模近2000亿元。", None, "secondary_only"),
     ("中国|公司|经济", "某公司与经济。", None, "conflict"),
     ("中国|奇怪", "无意义。", None, "no_topic_tag"),
     ("", "空。", None, "no_topic_tag")],
)  # fmt: skip
def test_finnl_taxonomy_rule(label: str, text: str, topic: str | None, reason: str) -> None:
    from training.taxonomy import finnl_topic

    d = finnl_topic(label, text)
    assert (d.topic, d.reason) == (topic, reason)


def test_taxonomy_targets_are_english_topics() -> None:
    from training.taxonomy import FINNL_TOPICS, REFINE, TOPICS

    assert TOPICS == TOPIC_LABELS and len(TOPICS) == 20  # one taxonomy, bounded label values
    assert set(FINNL_TOPICS.values()) <= set(TOPICS)
    assert {t for rules in REFINE.values() for t, _ in rules} <= set(TOPICS)


# Annotator junk found in the published FinNL files (PROVENANCE.md: "malformed tags"): a tag in the
# real files that is neither mapped, secondary, dropped, a region nor in this list needs a decision.
FINNL_JUNK_SEEN = {"组织", "更新", "正常", "躯体", "在", "奇怪", "中", "确认", "去", "修改", "便于", "资源", "zc",
                   "外中国", "我和", "外国际", "无法", "请在", "费劲", "经济新冠", "上个"}  # fmt: skip


@pytest.mark.parametrize("split", ["train", "valid"])
def test_every_real_finnl_label_maps_or_is_dropped_on_purpose(split: str) -> None:
    from training.taxonomy import mapping_report

    f = SHARED / "chinese_bbt_finnl_news_topic" / f"{split}.csv"
    if not f.is_file():
        pytest.skip(f"{f} not present")
    with open(f, encoding="utf-8", newline="") as fh:
        rows = [(r["text"], r["label"]) for r in csv.DictReader(fh)]
    rep = mapping_report(rows)
    junk = {t.removeprefix("junk:") for t in rep["tags"] if t.startswith("junk:")}
    assert junk <= FINNL_JUNK_SEEN, f"new FinNL tags without a decision: {sorted(junk - FINNL_JUNK_SEEN)}"
    assert set(rep["reasons"]) <= {"mapped", "conflict", "secondary_only", "dropped_tag", "no_topic_tag"}
    assert rep["reasons"]["mapped"] / len(rows) > 0.7  # the mapping keeps most of the set
    assert set(rep["topics"]) <= set(TOPIC_LABELS)
