"""`finsent demo` end to end: embedded broker, worker with the shipped bundles, English and Chinese
streams, and the injected surge about a Chinese company firing and resolving."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.cli.demo import SURGE_ENTITY

pytestmark = pytest.mark.slow


def test_demo_scores_both_languages_and_the_chinese_surge_fires_and_resolves(tmp_path: Path) -> None:
    cmd = [
        sys.executable, "-m", "monitor.cli", "demo", "--no-live", "--duration", "110", "--surge-start", "30",
        "--surge-duration", "30", "--workdir", str(tmp_path),
    ]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    out = r.stdout
    assert r.returncode == 0, (out[-3000:], r.stderr[-3000:])
    langs = dict(re.findall(r"\b(en|zh) (\d+)", re.search(r"scored by language: (.*)", out).group(1)))  # type: ignore[union-attr]
    assert int(langs["en"]) > 500 and int(langs["zh"]) > 250, out[-3000:]
    surge = re.search(rf"injected surge \(\* entity:{re.escape(SURGE_ENTITY)}, 30-60 s\): alert (\w+)", out)
    assert surge and surge.group(1) == "resolved", out[-3000:]
    # The evidence under the surge line is the injected Chinese items about the company.
    evidence = out[surge.end() :].splitlines()[1:4]
    assert evidence and all("比亚迪" in line for line in evidence), out[-3000:]
