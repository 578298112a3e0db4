"""`finsent replay`: file reading, pacing, surge injection, ids and timestamps.

The message builder runs on a fake clock, so pacing accuracy and the surge
window are checked exactly and instantly; one `slow` test replays into
the embedded broker and reads everything back.
"""

from __future__ import annotations

import csv
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from monitor import cli
from monitor.feed.replay import Pacer, ReplayStats, encode, iter_messages, replay
from monitor.feed.rows import FeedError, Row, RowSet, load_rows, rows_from_records
from monitor.feed.surges import Surge, company_name, named_companies, rewrite_for, surge_items, surge_pool
from monitor.stream.broker import EmbeddedBroker
from tests.conftest import consume, consume_records, settings_for

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "monitor" / "data" / "demo" / "headlines.csv"
NEWS = REPO / "monitor" / "data" / "demo" / "news.csv"
ZH = REPO / "monitor" / "data" / "demo" / "zh.csv"
WALL0 = 1_700_000_000_000


class FakeClock:
    """Monotonic time that moves only when slept on (plus an optional overshoot per sleep)."""

    def __init__(self, overshoot: float = 0.0) -> None:
        self.t = 100.0
        self.overshoot = overshoot
        self.sleeps = 0

    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> bool:
        self.sleeps += 1
        self.t += max(0.0, seconds) + self.overshoot
        return True

    def wall_ms(self) -> int:
        return WALL0 + round((self.t - 100.0) * 1000)


def make_rows(n: int = 100, neg_every: int = 5) -> list[Row]:
    """Neutral texts, and every `neg_every`-th a negative headline about one annotated company."""
    return [
        Row(id=f"r{i}", text=f"Acme Mills Q{i % 4 + 1} net falls {i}%", label="negative", source="test",
            entity="Acme Mills")
        if i % neg_every == 0
        else Row(id=f"r{i}", text=f"text {i}", label="neutral", source="test")
        for i in range(n)
    ]  # fmt: skip


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


# --------------------------------------------------------------------------- pacing


@pytest.mark.parametrize("rate", [1, 10, 50, 500, 2000])
def test_pacing_matches_rate_on_a_fake_clock(rate: float) -> None:
    clock = FakeClock()
    n = max(5, int(rate * 5))
    t0 = clock.t
    msgs = list(iter_messages(make_rows(n), rate=rate, clock=clock))
    assert len(msgs) == n
    # The first message goes at once, the rest one token each.
    assert clock.t - t0 == pytest.approx((n - 1) / rate, rel=1e-6)


@pytest.mark.parametrize("rate", [200, 2000])
def test_pacing_stays_accurate_when_every_sleep_overshoots(rate: float) -> None:
    # Real sleeps overshoot (~0.1-0.3 ms); the token bucket credits that back.
    clock = FakeClock(overshoot=0.0003)
    n = rate * 10
    t0 = clock.t
    for _ in iter_messages(make_rows(n), rate=rate, clock=clock):
        pass
    achieved = (n - 1) / (clock.t - t0)
    assert achieved == pytest.approx(rate, rel=0.01)


def test_pacer_burst_is_capped_after_a_stall() -> None:
    clock = FakeClock()
    pacer = Pacer(100, clock)  # burst = a quarter second = 25 tokens
    assert pacer.wait()
    clock.t += 10.0  # stalled 10 s: 1000 tokens' worth, but only 25 may be saved
    start = clock.t
    for _ in range(25):
        pacer.wait()
    assert clock.t == start  # 25 at once
    pacer.wait()
    assert clock.t > start  # the 26th waits
    assert Pacer(2, clock).burst == 1.0  # slow rates never burst


def test_rate_zero_is_unpaced_and_a_stop_ends_the_stream() -> None:
    clock = FakeClock()
    assert len(list(iter_messages(make_rows(50), rate=0, clock=clock))) == 50
    assert clock.sleeps == 0

    class StoppedClock(FakeClock):
        def sleep(self, seconds: float) -> bool:
            return False

    assert len(list(iter_messages(make_rows(50), rate=10, clock=StoppedClock()))) == 1


# --------------------------------------------------------------------------- surge


def test_surge_share_within_the_window_and_none_outside() -> None:
    rate, clock = 20.0, FakeClock()
    surge = Surge.entity("TSLA", "Tesla", start_s=30, duration_s=60, share=0.8)
    msgs = list(iter_messages(make_rows(400), rate=rate, clock=clock, surge=surge, loop=True, limit=3000, seed=3))
    assert len(msgs) == 3000

    def elapsed(m: dict[str, Any]) -> float:
        return (m["published_at"] - WALL0) / 1000

    inside = [m for m in msgs if 30 <= elapsed(m) < 90]
    outside = [m for m in msgs if not 30 <= elapsed(m) < 90]
    assert len(inside) == pytest.approx(60 * rate, abs=2)
    share = sum(bool(m.get("injected")) for m in inside) / len(inside)
    assert share == pytest.approx(0.8, abs=0.04)
    assert not any(m.get("injected") for m in outside)
    for m in (m for m in inside if m.get("injected")):
        # The annotated company gives way to Tesla; nothing is put in front of the headline.
        assert m["text"].startswith("Tesla Q") and "Acme" not in m["text"] and ":" not in m["text"]
        assert m["tickers"] == ["TSLA"]
        assert m["injected_from"].startswith("r") and int(m["injected_from"][1:]) % 5 == 0  # a negative row
        assert m["id"].startswith("surge-tsla-")


def test_surge_draws_without_repeats_and_avoids_rows_naming_other_tickers() -> None:
    rows = [
        Row(id=f"n{i}", text=f"Acme Mills shares fall {i}%", label="negative", entity="Acme Mills") for i in range(28)
    ]
    rows += [
        Row(id="tesla", text="Tesla recalls 100,000 cars over a seat-belt fault", label="negative"),  # as it is
        Row(id="tag", text="$TSLA slides before the open", label="negative"),  # as it is
        Row(id="cash", text="$CCL $RCL - Nomura sees weakness", label="negative"),  # other companies
        Row(id="plain", text="Markets fall on rate fears", label="negative"),  # no company to rewrite
        Row(id="two", text="Acme cuts orders from Apple", label="negative", entity="Acme"),  # Apple would remain
        Row(id="absent", text="Shares slump after results", label="negative", entity="Acme"),  # entity not in text
        Row(id="both", text="Tesla and Ford shares fall", label="negative", tickers=("TSLA", "F")),
    ]
    rows += [Row(id=f"o{i}", text=f"other {i}", label="neutral", entity="Acme") for i in range(30)]
    surge = Surge.entity("TSLA", "Tesla", start_s=0, duration_s=1000, share=1.0)
    assert {r.id for r in surge_pool(rows, surge)} == {f"n{i}" for i in range(28)} | {"tesla", "tag"}
    msgs = list(iter_messages(rows, rate=0, clock=FakeClock(), surge=surge, limit=30))
    assert len({m["injected_from"] for m in msgs}) == 30  # a full cycle before any repeat
    texts = {m["injected_from"]: m["text"] for m in msgs}
    assert texts["tesla"] == "Tesla recalls 100,000 cars over a seat-belt fault"
    assert texts["tag"] == "$TSLA slides before the open"
    assert texts["n3"] == "Tesla shares fall 3%"


@pytest.mark.parametrize(
    ("text", "entity", "name", "expected"),
    [
        ("Bosch's Q2 PAT declines 11.3%", "Bosch", "Tesla", "Tesla's Q2 PAT declines 11.3%"),
        ("Lender invokes United Spirits' pledged shares", "United Spirits", "Tesla", "Lender invokes Tesla's pledged shares"),
        ("Sell TCS; TCS slips 9% post Q2 results", "TCS", "Tesla", "Sell Tesla; Tesla slips 9% post Q2 results"),
        ("Acme falls 5%", "Acme", "ZZZZ", "$ZZZZ falls 5%"),  # no name known: the cashtag names it
        ("Acmeville falls 5%", "Acme", "Tesla", None),  # only whole words are the entity
        ("Downgrade Apple to 'Hold'", "Apple", "Tesla", "Downgrade Tesla to 'Hold'"),
    ],
)  # fmt: skip
def test_rewrite_puts_the_company_in_place_of_the_annotated_one(
    text: str, entity: str, name: str, expected: str | None
) -> None:
    surge = Surge.entity("TSLA" if name == "Tesla" else name, name)
    got = rewrite_for(Row(id="x", text=text, label="negative", entity=entity), surge)
    assert (got[0] if got else None) == expected
    if got:
        assert got[1] == [surge.key]


def test_market_wide_and_topic_surges_keep_the_text() -> None:
    rows = [
        Row(id=f"n{i}", text=f"bad {i}", label="Bearish", topic="Macro" if i % 2 else "Earnings") for i in range(10)
    ]
    rows += [Row(id=f"p{i}", text=f"good {i}", label="positive") for i in range(10)]
    every = Surge("all", start_s=0, duration_s=100, share=1.0)
    msgs = list(iter_messages(rows, rate=0, clock=FakeClock(), surge=every))
    assert all(m["injected"] and m["text"].startswith("bad ") and "tickers" not in m for m in msgs)
    macro = Surge("topic", "macro", start_s=0, duration_s=100, share=1.0)
    msgs = list(iter_messages(rows, rate=0, clock=FakeClock(), surge=macro))
    assert {m["injected_from"] for m in msgs} <= {f"n{i}" for i in range(1, 10, 2)}
    with pytest.raises(ValueError, match="no negative rows"):
        list(iter_messages(rows, rate=0, clock=FakeClock(), surge=Surge("topic", "Crypto", start_s=0)))


def test_surge_validation_and_names() -> None:
    with pytest.raises(ValueError):
        Surge.entity("TSLA", share=0)
    with pytest.raises(ValueError):
        Surge("entity", "")
    assert Surge.entity("$tsla").key == "TSLA"
    assert company_name("TSLA") == "Tesla"  # from the shipped watchlist
    assert company_name("ZZZZ") == "ZZZZ"
    # A name equal to the ticker is not repeated: "$ZZZZ: ..." rather than "ZZZZ $ZZZZ: ...".
    rows = [Row(id="n", text="Acme falls", label="negative", entity="Acme")]
    msg = next(iter_messages(rows, rate=0, clock=FakeClock(), surge=Surge.entity("ZZZZ", start_s=0, share=1)))
    assert msg["text"] == "$ZZZZ falls"


# --------------------------------------------------------------------------- ids and timestamps


def test_ids_are_stable_and_unique_across_loops() -> None:
    rows = make_rows(10)
    surge = Surge.entity("TSLA", "Tesla", start_s=0.2, duration_s=0.5, share=0.5)
    run1 = list(iter_messages(rows, rate=10, clock=FakeClock(), surge=surge, loop=True, limit=25, seed=9))
    run2 = list(iter_messages(rows, rate=10, clock=FakeClock(), surge=surge, loop=True, limit=25, seed=9))
    assert run1 == run2
    ids = [m["id"] for m in run1]
    assert len(set(ids)) == 25
    assert "r3-r1" in ids and "r4-r2" in ids


def test_generated_ids_use_file_stem_and_row(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "news.csv", [{"text": "a"}, {"text": "  "}, {"text": "c"}])
    rs = load_rows(path)
    assert [r.id for r in rs.rows] == ["news-0", "news-2"]
    assert rs.skipped == 1
    assert [r.id for r in load_rows(path).rows] == ["news-0", "news-2"]


def test_timestamps_now_and_preserve() -> None:
    rows, _ = rows_from_records(
        [
            {"id": "a", "text": "x", "published_at": "1699999999000"},
            {"id": "b", "text": "y", "published_at": "2024-05-01T12:00:00Z"},
            {"id": "c", "text": "z"},
        ]
    )
    clock = FakeClock()
    now = list(iter_messages(rows, rate=2, clock=clock, timestamps="now"))
    assert [m["published_at"] for m in now] == [WALL0, WALL0 + 500, WALL0 + 1000]
    kept = list(iter_messages(rows, rate=2, clock=FakeClock(), timestamps="preserve"))
    assert kept[0]["published_at"] == 1699999999000
    assert kept[1]["published_at"] == "2024-05-01T12:00:00Z"
    assert "published_at" not in kept[2]
    with pytest.raises(ValueError):
        list(iter_messages(rows, timestamps="later", clock=FakeClock()))  # type: ignore[arg-type]


def test_preserved_timeline_keeps_injected_items_in_place() -> None:
    rows = [
        Row(id=f"r{i}", text=f"Acme falls {i}%", label="negative", published_at=1_000 * i, entity="Acme")
        for i in range(20)
    ]
    surge = Surge.entity("TSLA", "Tesla", start_s=0, duration_s=100, share=1.0)
    msgs = list(iter_messages(rows, rate=0, clock=FakeClock(), timestamps="preserve", surge=surge, seed=1))
    assert all(m["injected"] for m in msgs)
    assert [m["published_at"] for m in msgs] == [1_000 * i for i in range(20)]


def test_message_fields_and_encoding() -> None:
    rows, _ = rows_from_records(
        [{"id": 7, "text": "Apple $AAPL beats", "source": "wire", "tickers": "AAPL; msft", "url": "http://x", "n": 1}]
    )
    msg = next(iter_messages(rows, rate=0, clock=FakeClock()))
    assert msg == {
        "id": "7",
        "text": "Apple $AAPL beats",
        "source": "wire",
        "tickers": ["AAPL", "MSFT"],
        "url": "http://x",
        "published_at": WALL0,
    }
    key, value = encode({"id": "é1", "text": "café"})
    assert key == "é1".encode() and json.loads(value) == {"id": "é1", "text": "café"}


# --------------------------------------------------------------------------- files


def test_reads_csv_tsv_jsonl_and_json(tmp_path: Path) -> None:
    write_csv(tmp_path / "a.csv", [{"id": "1", "headline": "hello", "label": "negative"}])
    (tmp_path / "b.tsv").write_text("id\ttext\n1\thello tab\n", encoding="utf-8")
    (tmp_path / "c.jsonl").write_text('{"id": "1", "text": "hi", "tickers": ["TSLA"]}\n\n{"text": "two"}\n')
    (tmp_path / "d.json").write_text('[{"text": "arr"}]')
    assert load_rows(tmp_path / "a.csv", text_col="headline").rows[0].negative
    assert load_rows(tmp_path / "b.tsv").rows[0].text == "hello tab"
    c = load_rows(tmp_path / "c.jsonl").rows
    assert [r.id for r in c] == ["1", "c-1"] and c[0].tickers == ("TSLA",)
    assert load_rows(tmp_path / "d.json").rows[0].text == "arr"


@pytest.mark.parametrize(
    ("name", "content", "kwargs", "match"),
    [
        ("missing.csv", None, {}, "does not exist"),
        ("a.csv", "id,body\n1,x\n", {}, "no 'text' column.*--text-col"),
        ("a.csv", "id,text\n1,x\n", {"id_col": "uid"}, "no 'uid' column"),
        ("a.csv", "id,text\n1,\n", {}, "holds no rows with text"),
        ("a.xlsx", "x", {}, "unknown file type"),
        ("a.jsonl", '{"text": "a"}\nnot json\n', {}, r"a.jsonl:2 is not a JSON line"),
        ("a.csv", b"text\n\xff\xfe\n", {}, "not UTF-8"),
    ],
)
def test_bad_files_are_one_line_errors(
    tmp_path: Path, name: str, content: str | bytes | None, kwargs: dict[str, Any], match: str
) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(FeedError, match=match) as err:
        load_rows(path, **kwargs)
    assert "\n" not in str(err.value)


def test_parquet_needs_pyarrow(tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        path.write_bytes(b"PAR1")
        with pytest.raises(FeedError, match="needs pyarrow"):
            load_rows(path)
        return
    pq.write_table(pa.table({"id": ["1"], "text": ["hello"]}), path)
    assert load_rows(path).rows[0].text == "hello"


def test_cli_reports_bad_input_as_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write_csv(tmp_path / "x.csv", [{"body": "a"}])
    assert cli.main(["replay", str(bad), "--bootstrap", "127.0.0.1:1"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert err.startswith("finsent: error:") and "no 'text' column" in err and "\n" not in err
    assert cli.main(["replay", str(DEMO), "--surge-entity", "TSLA", "--surge-share", "1.5"]) == cli.EXIT_USAGE
    assert "--surge-share" in capsys.readouterr().err
    assert cli.main(["replay", str(DEMO), "--surge-name", "Tesla"]) == cli.EXIT_USAGE
    assert "--surge-name needs --surge-entity" in capsys.readouterr().err
    assert cli.main(["replay", str(DEMO), "--surge-entity", "not a ticker"]) == cli.EXIT_USAGE
    with pytest.raises(SystemExit):  # argparse: the surge kinds exclude each other
        cli.main(["replay", str(DEMO), "--surge-entity", "TSLA", "--surge-all"])


def test_surge_without_negative_rows_is_a_clear_error(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "pos.csv", [{"text": "up", "label": "positive"}])
    settings = settings_for("127.0.0.1:1")
    with pytest.raises(FeedError, match="no rows labelled negative in column 'label'"):
        replay(settings, path, "t", surge=Surge.entity("TSLA", "Tesla"), create_topic=False)
    # Negative rows that name no company cannot become news about Tesla.
    path = write_csv(tmp_path / "neg.csv", [{"text": "Markets fall on rate fears", "label": "negative"}])
    with pytest.raises(FeedError, match=r"none names TSLA alone.*entity column") as err:
        replay(settings, path, "t", surge=Surge.entity("TSLA", "Tesla"), create_topic=False)
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- demo data


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def test_demo_data_is_shipped_small_and_stratified() -> None:
    assert DEMO.stat().st_size < 1_000_000
    fields, rows = _read(DEMO)
    assert fields == ["id", "text", "label", "source"]
    assert 2500 <= len(rows) <= 3500
    assert len({r["id"] for r in rows}) == len(rows)
    assert {r["source"] for r in rows} == {"twitter"}
    counts = Counter(r["label"] for r in rows)
    assert set(counts) == {"negative", "neutral", "positive"}
    # Proportional to the source: ~15 % negative, ~20 % positive, ~65 % neutral.
    assert 0.12 < counts["negative"] / len(rows) < 0.18
    assert 0.17 < counts["positive"] / len(rows) < 0.23
    assert all(r["text"].strip() and "\n" not in r["text"] for r in rows)
    provenance = (DEMO.parent / "PROVENANCE.md").read_text()
    assert provenance.count("MIT") >= 2 and "SEntFiN" in provenance


def test_demo_news_is_shipped_small_stratified_and_annotated() -> None:
    assert NEWS.stat().st_size < 500_000
    fields, rows = _read(NEWS)
    assert fields == ["id", "text", "label", "source", "entity"]
    assert 1500 <= len(rows) <= 2500
    assert len({r["id"] for r in rows}) == len(rows) and {r["source"] for r in rows} == {"news"}
    counts = Counter(r["label"] for r in rows)
    # Proportional to SEntFiN: ~28 % negative, ~36 % positive, ~36 % neutral.
    assert 0.24 < counts["negative"] / len(rows) < 0.32
    with_entity = [r for r in rows if r["entity"]]
    assert 0.15 < len(with_entity) / len(rows) < 0.4
    assert all(r["entity"] in r["text"] for r in with_entity)
    # Indices, currencies and commodities are not companies another company could stand in for.
    assert not {r["entity"] for r in with_entity} & {"Sensex", "Nifty", "Rupee", "Gold", "Zinc", "S&P 500"}


def test_demo_surge_is_real_negative_headlines_about_the_company() -> None:
    """Every injected item is a real negative headline: about Tesla already, or with Tesla for its company."""
    surge = Surge.entity("TSLA", "Tesla")
    items = surge_items(load_rows(NEWS).rows, surge)
    assert len(items) > 100  # the demo injects ~180 items: few repeats
    for row, text, tickers in items:
        assert row.negative and tickers == ["TSLA"]
        assert named_companies(text) == {"TSLA"}
        # Putting the company back gives the real headline: nothing was added, only the name swapped.
        restored = text.replace("Tesla", str(row.entity))
        assert restored in (row.text, row.text.replace(f"{row.entity}'", f"{row.entity}'s")), (row.text, text)
    # The tweets carry no annotation: only those naming Tesla themselves can be injected, as they are.
    tweets = surge_items(load_rows(DEMO).rows, surge)
    assert tweets and all(text == row.text for row, text, _ in tweets)


def test_demo_chinese_items_are_labelled_and_name_their_company() -> None:
    from monitor.core.entities import default_watchlist, extract_entities
    from monitor.core.language import detect_script

    fields, rows = _read(ZH)
    assert fields == ["id", "text", "label", "source", "entity"] and 300 <= len(rows) <= 600
    assert len({r["text"] for r in rows}) == len(rows) and {r["source"] for r in rows} == {"news", "forum"}
    counts = Counter(r["label"] for r in rows)
    assert all(0.25 < counts[lab] / len(rows) < 0.45 for lab in ("negative", "neutral", "positive"))
    assert all(detect_script(r["text"]) == "zh" for r in rows)
    wl = default_watchlist()
    with_entity = [r for r in rows if r["entity"]]
    assert len({r["entity"] for r in with_entity}) >= 40
    for r in with_entity:  # the one company the row is about, found by the worker's own extractor
        assert r["text"].count(r["entity"]) == 1
        assert extract_entities(r["text"], (), wl) == extract_entities(r["entity"], (), wl), r


def test_demo_chinese_company_surge_is_negative_items_about_it() -> None:
    """The demo's default surge (BYD, 002594.SZ) rides in the Chinese stream, with its Chinese name swapped in."""
    from monitor.cli.demo import SURGE_ENTITY

    surge = Surge.entity(SURGE_ENTITY, company_name(SURGE_ENTITY))
    assert surge.name == "比亚迪"
    items = surge_items(load_rows(ZH).rows, surge)
    assert len(items) > 100
    for row, text, tickers in items:
        assert row.negative and tickers == [SURGE_ENTITY] and named_companies(text) == {SURGE_ENTITY}
        assert text.replace("比亚迪", str(row.entity)) == row.text or row.entity == "比亚迪"


def test_demo_data_script_reproduces_the_shipped_files(tmp_path: Path) -> None:
    datasets = REPO.parent / "shared" / "datasets"
    src = datasets / "twitter_financial_news_sentiment" / "train.csv"
    news = datasets / "sentfin_headlines"
    if not src.is_file() or not (news / "entity_level_train.csv").is_file():
        pytest.skip("source data sets not available on this machine")
    import runpy

    mod = runpy.run_path(str(REPO / "scripts" / "make_demo_data.py"))
    assert mod["main"]([str(src), "--news-dir", str(news), "--out-dir", str(tmp_path)]) == 0
    for name in ("headlines.csv", "news.csv", "PROVENANCE.md"):
        assert (tmp_path / name).read_bytes() == (DEMO.parent / name).read_bytes(), name


# --------------------------------------------------------------------------- Kafka


@pytest.mark.slow
def test_replay_200_rows_into_the_broker(broker: EmbeddedBroker, topics: dict[str, Any], tmp_path: Path) -> None:
    settings = settings_for(broker, topics=topics)
    topic = topics["inputs"][0]
    with open(DEMO, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))[:200]
    path = write_csv(tmp_path / "sample.csv", rows)
    before = time.time() * 1000
    seen: list[int] = []
    stats = replay(settings, path, topic, rate=500, progress=lambda s: seen.append(s.sent))
    assert isinstance(stats, ReplayStats)
    assert (stats.sent, stats.failed, stats.injected) == (200, 0, 0)
    assert seen[-1] == 200 and stats.seconds >= 199 / 500 * 0.95  # paced, not a burst
    records = consume_records(broker, topic, 200, timeout=20)
    assert len(records) == 200
    values = [r.value for r in records]
    assert {v["id"] for v in values} == {r["id"] for r in rows}
    by_id = {r["id"]: r for r in rows}
    for rec in records:
        v = rec.value
        assert rec.key == v["id"].encode()
        assert set(v) == {"id", "text", "source", "published_at"}
        assert v["text"] == by_id[v["id"]]["text"] and v["source"] == "twitter"
        assert before - 1000 <= v["published_at"] <= time.time() * 1000 + 1000


@pytest.mark.slow
def test_cli_replay_with_surge_creates_the_topic(
    broker: EmbeddedBroker, make_topics: Callable[..., dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    topic = make_topics(create=False)["inputs"][0]  # not created yet: replay creates it
    argv = ["replay", str(NEWS), "--topic", topic, "--rate", "0", "--limit", "120", "--quiet",
            "--surge-entity", "TSLA", "--surge-start", "0", "--surge-share", "0.5", "--seed", "1",
            "--bootstrap", broker.bootstrap, "--profile", "embedded"]  # fmt: skip
    assert cli.main(argv) == 0
    assert "sent 120 messages" in capsys.readouterr().out
    values = consume(broker, topic, 120, timeout=20)
    injected = [v for v in values if v.get("injected")]
    assert len(values) == 120 and 40 <= len(injected) <= 80
    by_id = {r.id: r for r in load_rows(NEWS).rows}
    for v in injected:
        source_row = by_id[v["injected_from"]]
        assert source_row.negative and source_row.entity and v["tickers"] == ["TSLA"]
        assert v["text"] == rewrite_for(source_row, Surge.entity("TSLA", "Tesla"))[0]  # type: ignore[index]


@pytest.mark.slow
def test_replay_in_a_thread_stops_promptly(broker: EmbeddedBroker, topics: dict[str, Any]) -> None:
    settings = settings_for(broker, topics=topics)
    rowset = RowSet(DEMO, make_rows(50), 0, ["id", "text"])
    ten = threading.Event()
    stop = threading.Event()
    result: dict[str, Any] = {}

    def run() -> None:
        result["stats"] = replay(
            settings, rowset, topics["inputs"][1], rate=20, loop=True, stop=stop,
            progress=lambda s: s.sent >= 10 and ten.set(),
        )  # fmt: skip

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ten.wait(20), result
    time.sleep(0.5)  # ~10 more at 20 msg/s
    stop.set()
    t = time.monotonic()
    thread.join(10)
    assert not thread.is_alive() and time.monotonic() - t < 3
    stats = result["stats"]
    assert 15 <= stats.sent <= 30 and stats.failed == 0


def test_stop_event_is_honoured_before_any_send() -> None:
    stop = threading.Event()
    stop.set()
    from monitor.feed.replay import SystemClock

    clock = SystemClock(stop)
    assert clock.sleep(5) is False
    assert len(list(iter_messages(make_rows(10), rate=1, clock=clock))) == 1
