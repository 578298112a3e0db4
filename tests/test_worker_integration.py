"""The worker end to end on real brokers with real ONNX models.

Each test starts `finsent worker` as a subprocess (as in production),
produces to its own freshly named topics and reads the output topics. Every
test runs twice: on the embedded broker (tansu, `embedded` profile) and on
the persistent one (noida-db, plain `kafka` profile, idempotent producers).
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.settings import DEFAULT_BUNDLE
from monitor.stream.broker import EmbeddedBroker
from monitor.stream.noida import PersistentBroker
from monitor.testing import (
    BROKER_KINDS,
    RESUME_RACE_HOOK,
    TopicNames,
    TopicReader,
    WorkerProcess,
    hook_env,
    make_topics,
    open_broker,
    produce,
)
from tests.tiny_bundle import make_bundle

pytestmark = pytest.mark.slow

Broker = EmbeddedBroker | PersistentBroker


@pytest.fixture(scope="module", params=BROKER_KINDS)
def kafka(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with open_broker(request.param, tmp_path_factory.mktemp(request.param)) as b:
        yield b


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return make_bundle(tmp_path / "tiny")


def window_env(size_s: float, lateness_s: float = 2.0, idle_s: float = 1.0, **surge: str) -> dict[str, str]:
    env = {
        "FINSENT_WINDOWS__SIZE_S": str(size_s),
        "FINSENT_WINDOWS__ALLOWED_LATENESS_S": str(lateness_s),
        "FINSENT_WINDOWS__IDLE_S": str(idle_s),
        "FINSENT_WINDOWS__TICK_INTERVAL_S": "0.5",
    }
    env.update({f"FINSENT_SURGE__{k.upper()}": v for k, v in surge.items()})
    return env


def surge_env(lateness_s: float, idle_s: float = 3600.0) -> dict[str, str]:
    """1 s windows (the default idle time leaves closing to event time alone) and a surge rule firing on 3 windows."""
    return window_env(
        1.0, lateness_s=lateness_s, idle_s=idle_s,
        k="3", min_volume="5", min_share="0.4", warmup_windows="3", resolve_windows="2", cooldown_s="600",
    )  # fmt: skip


def test_items_scored_and_bad_messages_dead_lettered(kafka: Broker, tmp_path: Path) -> None:
    model = DEFAULT_BUNDLE if (DEFAULT_BUNDLE / "manifest.json").is_file() else make_bundle(tmp_path / "tiny")
    topics = TopicNames()
    make_topics(kafka.bootstrap, topics, input_max_bytes=16 << 20)  # the 1.2 MB item reaches the worker
    worker = WorkerProcess(kafka, topics, model, tmp_path).start()
    try:
        good = [
            {"id": f"g{i}", "text": f"Tesla shares plunge after fraud probe number {i}", "source": "test", "x": i}
            for i in range(20)
        ]
        good.append({"id": "big", "text": "Apple beats estimates. " * 20_000, "tickers": ["$aapl"]})  # ~460 KB
        bad: list[bytes] = [
            b"not json at all",
            json.dumps({"id": "m1"}).encode(),
            json.dumps({"id": "e1", "text": "   "}).encode(),
            json.dumps({"id": 5.5, "text": "wrong id type"}).encode(),
            json.dumps({"id": "t1", "text": ["list"]}).encode(),
            json.dumps({"id": "huge", "text": "x" * 1_200_000}).encode(),
            b'{"id": "u1", "text": "bad \xff\xfe utf8"}',
            json.dumps([1, 2, 3]).encode(),
        ]
        mixed: list[bytes | dict] = []
        for i, g in enumerate(good):
            mixed.append(g)
            if i < len(bad):
                mixed.append(bad[i])
        produce(kafka.bootstrap, topics.news, mixed)
        scored = TopicReader(kafka.bootstrap, topics.scored)
        dead = TopicReader(kafka.bootstrap, topics.deadletter)
        got = scored.wait_for(lambda v: len({x["id"] for x in v}) >= len(good), timeout=90)
        dl = dead.wait_for(lambda v: len(v) >= len(bad), timeout=30)
        assert {x["id"] for x in got} == {g["id"] for g in good}, worker.log_tail()
        rec = next(x for x in got if x["id"] == "g3")
        assert rec["x"] == 3 and rec["source"] == "test"  # unknown fields pass through
        assert rec["sentiment"]["label"] in ("negative", "neutral", "positive")
        assert -1 <= rec["sentiment"]["score"] <= 1
        assert abs(sum(rec["sentiment"]["probs"].values()) - 1) < 1e-3
        assert rec["topic"]["label"] and 0 < rec["topic"]["confidence"] <= 1
        assert "TSLA" in rec["entities"]
        assert rec["model"]["sha256"] and rec["model"]["version"]
        assert rec["scored_at"] >= rec["event_time"] and rec["lag_ms"] >= 0
        assert "AAPL" in next(x for x in got if x["id"] == "big")["entities"]
        reasons = Counter(d["error"] for d in dl)
        assert sum(reasons.values()) == len(bad), reasons
        assert reasons["not_json"] >= 1 and reasons["not_utf8"] == 1 and reasons["too_large"] == 1
        assert all(d["origin"]["topic"] == topics.news and d["origin"]["offset"] >= 0 for d in dl)
        assert worker.proc is not None and worker.proc.poll() is None  # never dies on data
        assert worker.metric("finsent_invalid_messages_total") == len(bad)
        scored.close()
        dead.close()
    finally:
        worker.stop()


def _timed_items(base_ms: int, window_ms: int, plan: list[tuple[int, int]], entity: str, batch: str = "") -> list[dict]:
    """plan: per window, (negatives, total). Negative texts use words the tiny model reads as negative.

    Ids are "<entity><batch>-<window>-<i>": two calls for the same entity need different `batch`es.
    """
    items = []
    for w, (neg, total) in enumerate(plan):
        for i in range(total):
            text = "shares plunge fraud crash" if i < neg else "the company shares"
            items.append(
                {
                    "id": f"{entity}{batch}-{w}-{i}",
                    "text": text,
                    "tickers": [entity],
                    "published_at": base_ms + w * window_ms + 10 + i,
                }
            )
    return items


def test_windows_exact_and_one_alert_per_surge(kafka: Broker, tmp_path: Path, tiny: Path) -> None:
    topics = TopicNames()
    make_topics(kafka.bootstrap, topics)
    env = surge_env(lateness_s=5.0, idle_s=1.0)
    worker = WorkerProcess(kafka, topics, tiny, tmp_path, env=env).start()
    try:
        window_ms = 1000
        base = (int(time.time() * 1000) // window_ms - 60) * window_ms
        plan = [(1, 10)] * 8 + [(9, 10)] * 3 + [(1, 10)] * 8
        items = _timed_items(base, window_ms, plan, "ACME")
        # In event-time order, one window per 0.25 s: event time runs 4x faster than the
        # clock, so the 5 s allowed lateness covers the scoring actors' reordering.
        produce(kafka.bootstrap, topics.news, items, partition=0, pace_every=10, pace_s=0.25)
        trends = TopicReader(kafka.bootstrap, topics.trends)
        alerts = TopicReader(kafka.bootstrap, topics.alerts)
        want = len(plan)

        def acme(vals: list[dict]) -> list[dict]:
            return [v for v in vals if v["dimension"] == "entity" and v["key"] == "ACME"]

        got = acme(trends.wait_for(lambda v: len(acme(v)) >= want, timeout=90))
        assert len(got) == want, worker.log_tail()
        by_start = {v["window_start"]: v for v in got}
        for w, (neg, total) in enumerate(plan):
            win = by_start[base + w * window_ms]
            assert win["count"] == total and win["negative"] == neg, win
            assert win["window_end"] - win["window_start"] == window_ms
        alls = [v for v in trends.values() if v["dimension"] == "all"]
        assert sum(v["count"] for v in alls) == len(items)
        acme_alerts = [a for a in alerts.wait_for(lambda v: len(v) >= 2, timeout=30) if a["key"] == "ACME"]
        states = [a["state"] for a in acme_alerts]
        assert states == ["firing", "resolved"], acme_alerts
        firing = acme_alerts[0]
        assert firing["dimension"] == "entity" and firing["count"] == 10
        assert firing["negative_share"] == pytest.approx(0.9)
        assert firing["zscore"] >= 3
        assert firing["evidence"] and all("plunge" in e["text"] for e in firing["evidence"])
        assert worker.metric("finsent_alerts_total", {"dimension": "entity"}) >= 1
        trends.close()
        alerts.close()
    finally:
        worker.stop()


def test_killed_worker_loses_nothing_and_restores_windows(kafka: Broker, tmp_path: Path, tiny: Path) -> None:
    topics = TopicNames()
    make_topics(kafka.bootstrap, topics)
    env = window_env(1.0, lateness_s=600.0, idle_s=3600.0)  # windows stay open across the kill
    app_id = f"kill-{topics.suffix}"
    window_ms = 1000
    base = (int(time.time() * 1000) // window_ms - 30) * window_ms
    first = _timed_items(base, window_ms, [(2, 50)] * 4, "KILL")
    second = _timed_items(base + 4 * window_ms, window_ms, [(3, 50)] * 4, "KILL", batch="b")
    scored = TopicReader(kafka.bootstrap, topics.scored)
    worker = WorkerProcess(kafka, topics, tiny, tmp_path, app_id=app_id, env=env).start()
    try:
        produce(kafka.bootstrap, topics.news, first)
        scored.wait_for(lambda v: len(v) >= 120, timeout=60)
        worker.kill()
        produce(kafka.bootstrap, topics.news, second)
        worker = WorkerProcess(kafka, topics, tiny, tmp_path, app_id=app_id, env=env).start()
        all_ids = {i["id"] for i in first + second}
        got = scored.wait_for(lambda v: {x["id"] for x in v} >= all_ids, timeout=120)
        assert {x["id"] for x in got} >= all_ids, worker.log_tail()
        # Let aggregation and a commit catch up, then restart with a short lateness so windows close.
        time.sleep(3)
        worker.stop()
        # Redelivered items span 4 s of event time and arrive in any order: a lateness above that
        # keeps their windows open; the idle fallback (wall clock - idle_s, after an idle_s grace
        # from start) then closes them all.
        env_close = window_env(1.0, lateness_s=10.0, idle_s=5.0)
        worker = WorkerProcess(kafka, topics, tiny, tmp_path, app_id=app_id, env=env_close).start()
        trends = TopicReader(kafka.bootstrap, topics.trends)
        vals = trends.wait_for(
            lambda v: len([x for x in v if x["dimension"] == "entity" and x["key"] == "KILL"]) >= 8, timeout=60
        )
        kill = [x for x in vals if x["dimension"] == "entity" and x["key"] == "KILL"]
        summary = sorted((x["window_start"], x["count"], x["late_count"]) for x in kill)
        assert [c for _, c, _ in summary] == [50] * 8, summary
        assert sum(x["negative"] for x in kill) == 4 * 2 + 4 * 3
        trends.close()
    finally:
        scored.close()
        worker.stop()


def trail(bootstrap: str, topics: TopicNames, base: int, window_ms: int) -> str:
    """Where a short window's items stopped: distinct ids per window offset on each topic they pass through."""
    out = []
    stages = (
        ("input", topics.news),
        ("scored", topics.scored),
        ("trend events", topics.trend_events),
        ("dead letters", topics.deadletter),
    )
    where: dict[str, dict[str, str]] = {}  # stage -> id -> partition@offset of its first record
    for name, topic in stages:
        reader = TopicReader(bootstrap, topic)
        reader.wait_for(lambda v: False, timeout=3)
        per: dict[int, set[str]] = {}
        for r in reader.records:
            v = json.loads(r.value)
            where.setdefault(name, {}).setdefault(str(v.get("id")), f"{r.partition}@{r.offset}")
            if "tick" in v or (name == "trend events" and v.get("key") != "ACME"):
                continue
            ms = v.get("event_ms") or v.get("event_time") or v.get("published_at") or 0
            per.setdefault((int(ms) - base) // window_ms, set()).add(str(v.get("id")))
        reader.close()
        out.append(f"{name}: distinct ids per window offset {sorted((k, len(v)) for k, v in per.items())}")
    unscored = sorted(set(where.get("input", {})) - set(where.get("scored", {})))
    out.append(f"on the input, never scored (id input-partition@offset): {[(i, where['input'][i]) for i in unscored]}")
    return "\n".join(out)


def test_killed_mid_surge_no_alert_lost_or_duplicated(kafka: Broker, tmp_path: Path, tiny: Path) -> None:
    """SIGKILL between a surge's firing and its resolution: after the restart the same alert resolves, once."""
    topics = TopicNames()
    make_topics(kafka.bootstrap, topics)
    env = surge_env(lateness_s=5.0, idle_s=1.0)
    app_id = f"kill-surge-{topics.suffix}"
    window_ms = 1000
    base = (int(time.time() * 1000) // window_ms - 60) * window_ms
    plan = [(1, 10)] * 8 + [(9, 10)] * 3 + [(1, 10)] * 8
    items = _timed_items(base, window_ms, plan, "ACME")
    first, second = items[:100], items[100:]  # 8 calm windows and 2 surge windows, then the rest
    alerts = TopicReader(kafka.bootstrap, topics.alerts)
    trends = TopicReader(kafka.bootstrap, topics.trends)

    def acme(vals: list[dict]) -> list[dict]:
        return [v for v in vals if v["key"] == "ACME" and v["dimension"] == "entity"]

    worker = WorkerProcess(kafka, topics, tiny, tmp_path, app_id=app_id, env=env).start()
    try:
        produce(kafka.bootstrap, topics.news, first, partition=0, pace_every=10, pace_s=0.25)
        fired = acme(alerts.wait_for(lambda v: any(a["state"] == "firing" for a in acme(v)), timeout=60))
        assert [a["state"] for a in fired] == ["firing"], worker.log_tail()
        worker.kill()
        worker = WorkerProcess(kafka, topics, tiny, tmp_path, app_id=app_id, env=env).start()
        produce(kafka.bootstrap, topics.news, second, partition=0, pace_every=10, pace_s=0.25)
        got = acme(alerts.wait_for(lambda v: any(a["state"] == "resolved" for a in acme(v)), timeout=90))
        time.sleep(3)  # anything duplicated would arrive by now
        got = acme(alerts.wait_for(lambda v: False, timeout=1))
        distinct = {(a["alert_id"], a["state"]) for a in got}
        assert distinct == {(fired[0]["alert_id"], "firing"), (fired[0]["alert_id"], "resolved")}, got
        windows = acme(trends.wait_for(lambda v: len({w["window_start"] for w in acme(v)}) >= len(plan), timeout=60))
        by_start = {w["window_start"]: w for w in windows}
        counts = [(by_start.get(base + w * window_ms) or {}).get("count") for w in range(len(plan))]
        negatives = [(by_start.get(base + w * window_ms) or {}).get("negative") for w in range(len(plan))]
        if (counts, negatives) != ([t for _, t in plan], [n for n, _ in plan]):
            emitted = [((w["window_start"] - base) // window_ms, w["count"], w["late_count"]) for w in windows]
            raise AssertionError(
                f"trend windows (offset, count, late) in emitted order: {emitted}\n"
                f"{trail(kafka.bootstrap, topics, base, window_ms)}\nworker log:\n{worker.log_tail(80)}"
            )
        print(
            f"\nFAULT kill-mid-surge: alerts {[a['state'] for a in got]} ({len(got) - len(distinct)} redelivered "
            f"duplicates, same alert_id); {len(windows)} trend records for {len(plan)} windows, counts exact"
        )
    finally:
        alerts.close()
        trends.close()
        worker.stop()


def test_record_fetched_as_recovery_ends_is_scored(kafka: Broker, tmp_path: Path, tiny: Path) -> None:
    """A record queued for the scoring agent just as recovery resumes the flow is scored, not thrown away.

    The moment comes in 1 to 7 of 300 worker starts; the hook holds it open until an input record waits
    in a stream queue. Faust's resume at that point emptied the queues: the record was never scored, and
    the next commit stepped over it (monitor/stream/faust_fixes.py, fix 4).
    """
    topics = TopicNames()
    make_topics(kafka.bootstrap, topics)
    app_id = f"race-{topics.suffix}"
    env = window_env(1.0, lateness_s=600.0, idle_s=3600.0)
    window_ms = 1000
    base = (int(time.time() * 1000) // window_ms - 30) * window_ms
    first = _timed_items(base, window_ms, [(2, 20)] * 2, "RACE")  # window state: the restart has a table to recover
    second = _timed_items(base + 2 * window_ms, window_ms, [(2, 50)] * 4, "RACE", batch="b")  # waits for the restart
    scored = TopicReader(kafka.bootstrap, topics.scored)
    worker = WorkerProcess(kafka, topics, tiny, tmp_path, app_id=app_id, env=env).start()
    try:
        produce(kafka.bootstrap, topics.news, first)
        scored.wait_for(lambda v: len(v) >= len(first), timeout=60)
        time.sleep(2)  # a tick writes the window table's changelog
        worker.stop()
        # The restart's backlog goes to the other input topic, which the hook watches: every record that
        # waits there at the moment is new (a news record could be one the first worker scored already).
        produce(kafka.bootstrap, topics.comments, second)
        race = hook_env(tmp_path / "hooks", RESUME_RACE_HOOK.format(topics=[topics.comments], seconds=20))
        worker = WorkerProcess(kafka, topics, tiny, tmp_path, app_id=app_id, env={**env, **race}).start()
        all_ids = {i["id"] for i in first + second}
        got = {x["id"] for x in scored.wait_for(lambda v: {x["id"] for x in v} >= all_ids, timeout=90)}
        hit = re.search(r"resume race: (\d+) input records waited", worker.log_path.read_text(errors="replace"))
        assert hit and int(hit[1]) > 0, f"the moment was not reached, the test proves nothing:\n{worker.log_tail()}"
        missing = sorted(all_ids - got)
        assert not missing, f"{len(missing)} never scored ({hit[0]}): {missing[:10]}\n{worker.log_tail()}"
        print(
            f"\nFAULT resume race: {hit[1]} input record(s) waited as recovery ended; all {len(all_ids)} items scored"
        )
    finally:
        scored.close()
        worker.stop()


def test_bad_trend_event_is_dead_lettered(kafka: Broker, tmp_path: Path, tiny: Path) -> None:
    """A trend event the windows cannot take goes to the dead-letter topic with its reason; the worker goes on."""
    topics = TopicNames()
    make_topics(kafka.bootstrap, topics)
    worker = WorkerProcess(kafka, topics, tiny, tmp_path, env=window_env(1.0, lateness_s=1.0)).start()
    dead = TopicReader(kafka.bootstrap, topics.deadletter)
    trends = TopicReader(kafka.bootstrap, topics.trends)
    try:
        broken = {"id": "broken", "dimension": "entity", "key": "ACME", "sentiment": "negative"}  # no event_ms
        produce(kafka.bootstrap, topics.trend_events, [json.dumps(broken).encode()], partition=0)
        produce(kafka.bootstrap, topics.news, [{"id": "after", "text": "ACME shares plunge", "tickers": ["ACME"]}])
        got = dead.wait_for(lambda v: any(d["error"] == "aggregation_error" for d in v), timeout=60)
        [rec] = [d for d in got if d["error"] == "aggregation_error"]
        assert rec["origin"]["topic"] == topics.trend_events and "event_ms" in rec["detail"]
        assert json.loads(rec["raw"])["id"] == "broken"
        assert worker.metric("finsent_aggregation_failures_total", {"step": "event"}) == 1
        windows = trends.wait_for(lambda v: any(w["key"] == "ACME" for w in v), timeout=60)
        assert sum(w["count"] for w in windows if w["key"] == "ACME" and w["dimension"] == "entity") == 1
    finally:
        dead.close()
        trends.close()
        worker.stop()


def test_items_are_routed_by_language(kafka: Broker, tmp_path: Path, tiny: Path) -> None:
    # The "zh" bundle answers neutral to everything (bias 20), so the label shows which bundle scored an item.
    zh = make_bundle(tmp_path / "zh", version="zh", bias=20.0, languages=("zh",))
    topics = TopicNames()
    make_topics(kafka.bootstrap, topics)
    worker = WorkerProcess(kafka, topics, tiny, tmp_path, args=["--model", str(zh)]).start()
    try:
        items = [
            {"id": "en", "text": "shares plunge after fraud"},
            {"id": "zh", "text": "腾讯控股股价暴跌 fraud plunge"},  # Han script, no lang field
            {"id": "tag", "text": "fraud plunge", "lang": "zh-CN"},  # the producer's tag wins over the script
            {"id": "fr", "text": "fraud plunge", "lang": "fr"},  # no bundle declares fr: the default one scores it
        ]
        produce(kafka.bootstrap, topics.news, items)
        got = TopicReader(kafka.bootstrap, topics.scored).wait_for(lambda v: len({x["id"] for x in v}) >= 4, 60)
        by = {x["id"]: x for x in got}
        assert {
            k: (r["lang"], r["lang_source"], r["sentiment"]["label"], r["model"]["version"]) for k, r in by.items()
        } == {
            "en": ("en", "script", "negative", "1"),
            "zh": ("zh", "script", "neutral", "zh"),
            "tag": ("zh", "input", "neutral", "zh"),
            "fr": ("fr", "input", "negative", "1"),
        }, worker.log_tail()
        assert by["tag"]["input_fields"] == {"lang": "zh-CN"}
        assert worker.metric("finsent_messages_total", {"lang": "zh"}) == 2
        assert worker.metric("finsent_messages_total", {"lang": "en"}) == 1
        assert worker.metric("finsent_messages_total", {"lang": "other"}) == 1  # label values stay bounded
    finally:
        worker.stop()
