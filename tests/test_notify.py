from __future__ import annotations

import json
import logging
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from monitor import cli
from monitor.cli.errors import CliError
from monitor.cli.notify import (
    TOKEN_ENV,
    TOKEN_FILE_ENV,
    AlertCache,
    NotifyServer,
    RefusalLog,
    check_bearer,
    format_notification,
    load_token,
    make_server,
)
from tests.test_deploy_support import Webhook, wait_for

AM = {
    "status": "firing",
    "labels": {"alertname": "NegativeSentimentSurge", "dimension": "entity", "key": "TSLA", "severity": "critical"},
    "annotations": {
        "summary": "Negative opinion surge about entity TSLA",
        "dashboard": "/d/finsent-company?var-entity=TSLA",
    },
}
FA = {
    "state": "firing", "dimension": "entity", "key": "TSLA", "negative_share": 0.82, "baseline_mean": 0.12,
    "zscore": 7.4, "count": 57, "window_start": 1795341600000, "window_end": 1795341660000,
    "evidence": [{"id": "1", "text": "Tesla recalls 2m cars", "source": "news", "url": "https://x/1", "score": -0.97}],
}  # fmt: skip


def test_notification_carries_numbers_window_and_evidence() -> None:
    msg = format_notification(AM, FA)
    text = msg["text"]
    for part in ("FIRING", "TSLA", "82%", "12%", "z-score 7.4", "57 items", "2026-11-22 10:00:00 UTC",
                 "Tesla recalls 2m cars", "https://x/1", "Dashboard: /d/finsent-company"):  # fmt: skip
        assert part in text, part
    assert msg["evidence"][0]["id"] == "1" and msg["severity"] == "critical"


def test_without_worker_alert_falls_back_to_annotations() -> None:
    msg = format_notification({**AM, "annotations": {**AM["annotations"], "description": "desc"}}, None)
    assert "desc" in msg["text"] and msg["evidence"] == []


def test_cache_keeps_evidence_for_resolution() -> None:
    cache = AlertCache()
    cache.put(FA)
    cache.put({**FA, "state": "resolved", "evidence": []})
    got = cache.get("entity", "TSLA")
    assert got and got["state"] == "resolved" and got["evidence"] == FA["evidence"]


# --- access control: the bearer token -------------------------------------------------------------

TOKEN = "4f1c9e2a7b3d8e6f0a5c1b9d2e7f3a8c"


@contextmanager
def receiver(token: str | None, forward: str | None = None) -> Iterator[NotifyServer]:
    """The real receiver on a free loopback port, with the worker alert for TSLA already known."""
    cache = AlertCache()
    cache.put(FA)
    server = make_server("127.0.0.1", 0, cache, forward, wait_s=0, token=token)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def post(server: NotifyServer, authorization: str | None = None) -> tuple[int, dict[str, str]]:
    """POST one Alertmanager webhook; (status, response headers)."""
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    url = f"http://127.0.0.1:{server.server_port}/alertmanager"
    req = urllib.request.Request(url, data=json.dumps({"alerts": [AM]}).encode(), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


def scrape(server: NotifyServer) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=10) as resp:
        return str(resp.read().decode())


def test_token_gates_every_post_and_counts_refusals(capsys: pytest.CaptureFixture) -> None:
    hook = Webhook()
    try:
        with receiver(TOKEN, hook.url) as server:
            status, headers = post(server)
            assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer ")
            assert post(server, f"Basic {TOKEN}")[0] == 401  # the right secret in the wrong scheme is not a bearer
            status, headers = post(server, "Bearer not-the-token")
            assert status == 401 and 'error="invalid_token"' in headers["WWW-Authenticate"]
            assert post(server, f"Bearer {TOKEN}x")[0] == 401  # a prefix match is no match
            assert (server.rejected_total("missing"), server.rejected_total("wrong")) == (2, 2)
            assert hook.snapshot() == [] and capsys.readouterr().out == "", "a refused post must not notify"

            assert post(server, f"Bearer {TOKEN}")[0] == 200
            assert post(server, f"bearer  {TOKEN} ")[0] == 200  # the scheme is case-insensitive (RFC 7235)
            wait_for(lambda: len(hook.snapshot()) == 2, 10, "two forwarded notifications")
            assert {m["key"] for m in hook.snapshot()} == {"TSLA"} and "82%" in hook.snapshot()[0]["text"]
            assert (server.rejected_total("missing"), server.rejected_total("wrong")) == (2, 2)
            text = scrape(server)
            assert 'finsent_notify_rejected_total{reason="missing"} 2.0' in text
            assert 'finsent_notify_rejected_total{reason="wrong"} 2.0' in text
    finally:
        hook.close()


def test_without_a_token_anyone_is_accepted() -> None:
    hook = Webhook()
    try:
        with receiver(None, hook.url) as server:
            assert post(server)[0] == 200
            assert post(server, "Bearer anything")[0] == 200
            wait_for(lambda: len(hook.snapshot()) == 2, 10, "two forwarded notifications")
            assert server.rejected_total("missing") == server.rejected_total("wrong") == 0
            assert 'finsent_notify_rejected_total{reason="missing"} 0.0' in scrape(server)
    finally:
        hook.close()


def test_neither_the_token_nor_a_guess_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    guess = "guess-3b8e1d0c9f"
    with caplog.at_level(logging.DEBUG), receiver(TOKEN) as server:
        post(server, f"Bearer {guess}")
        post(server)
        post(server, f"Bearer {TOKEN}")
    refusals = [r.getMessage() for r in caplog.records if "refused a webhook" in r.getMessage()]
    assert len(refusals) == 2 and "wrong bearer token" in refusals[0] and "missing bearer token" in refusals[1]
    assert "127.0.0.1" in refusals[0]
    assert TOKEN not in caplog.text and guess not in caplog.text


def test_check_bearer() -> None:
    assert check_bearer(f"Bearer {TOKEN}", TOKEN) is None
    assert check_bearer(None, TOKEN) == check_bearer("", TOKEN) == check_bearer("Bearer", TOKEN) == "missing"
    assert check_bearer(f"Token {TOKEN}", TOKEN) == "missing"
    assert check_bearer("Bearer x", TOKEN) == check_bearer(f"Bearer {TOKEN[:-1]}", TOKEN) == "wrong"
    assert check_bearer("Bearer \u00e9t\u00e9", TOKEN) == "wrong"  # non-ASCII from a client: refused, not a crash


def test_load_token(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text(f"{TOKEN}\n")
    assert load_token(str(f), {}) == TOKEN  # the newline `echo` leaves is not part of it
    assert load_token(None, {TOKEN_ENV: TOKEN}) == TOKEN
    assert load_token(None, {}) is None and load_token(None, {TOKEN_ENV: ""}) is None
    with pytest.raises(CliError, match="both set"):
        load_token(str(f), {TOKEN_ENV: TOKEN})
    with pytest.raises(
        CliError, match=re.escape(f"cannot read token file {tmp_path / 'nope'}: No such file or directory")
    ):
        load_token(str(tmp_path / "nope"), {})
    with pytest.raises(CliError, match=r"cannot read token file .*: Is a directory"):
        load_token(str(tmp_path), {})
    f.write_text(" \n")
    with pytest.raises(CliError, match=re.escape(f"token file {f} is empty")):
        load_token(str(f), {})
    f.write_text("two words\n")
    with pytest.raises(CliError, match="one word of printable ASCII") as exc:
        load_token(str(f), {})
    assert "two" not in str(exc.value), "the error must not echo the secret"


def test_unreadable_token_is_one_line_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checked before the receiver binds or Kafka is asked: the bootstrap here answers nothing."""
    missing = tmp_path / "missing"
    argv = ["notify", "--listen", "127.0.0.1:0", "--bootstrap", "127.0.0.1:9"]
    assert cli.main([*argv, "--token-file", str(missing)]) == 2
    assert capsys.readouterr().err == f"finsent: error: cannot read token file {missing}: No such file or directory\n"
    empty = tmp_path / "empty"
    empty.write_text("")
    monkeypatch.setenv(TOKEN_FILE_ENV, str(empty))
    assert cli.main(argv) == 2
    assert capsys.readouterr().err == f"finsent: error: token file {empty} is empty\n"


def test_refusals_are_logged_once_a_minute_per_reason_with_their_count() -> None:
    refusals = RefusalLog(every_s=60)
    assert refusals.note("wrong", 0.0) == 1  # the first of a reason at once
    assert refusals.note("missing", 1.0) == 1  # reasons are limited apart
    assert [refusals.note("wrong", t) for t in (1.0, 30.0, 59.9)] == [None, None, None]
    assert refusals.note("wrong", 60.0) == 4  # the three held back and this one
    assert refusals.note("wrong", 61.0) is None
    assert refusals.note("missing", 200.0) == 1


def test_a_flood_of_refused_posts_logs_one_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING), receiver(TOKEN) as server:
        for _ in range(20):
            assert post(server, "Bearer nope")[0] == 401
        assert server.rejected_total("wrong") == 20  # every one still counted
    refusals = [r.getMessage() for r in caplog.records if "refused a webhook" in r.getMessage()]
    assert len(refusals) == 1 and "(1 since this line last appeared, 1 in all" in refusals[0], refusals
