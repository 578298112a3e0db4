"""Sample a running worker with py-spy and say where its CPU time went, by component.

py-spy samples every thread that is on a CPU (idle threads are skipped), so
the native onnxruntime call in the scoring thread counts while the event
loop keeps polling Kafka in the main thread.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

# First match from the innermost frame outwards decides a sample's component.
COMPONENTS: list[tuple[str, str]] = [
    ("onnxruntime/", "onnxruntime (model)"),
    ("tokenizers", "tokeniser"),
    ("monitor/model/scorer.py", "scorer (pad, softmax)"),
    ("json/", "json encode/decode"),
    ("orjson", "json encode/decode"),
    ("aiokafka/", "Kafka client (aiokafka)"),
    ("kafka/", "Kafka client (aiokafka)"),
    ("prometheus_client/", "metrics"),
    ("monitor/core/validate.py", "validation"),
    ("monitor/core/entities.py", "entity extraction"),
    ("monitor/core/windows.py", "windows and surge rule"),
    ("monitor/core/surge.py", "windows and surge rule"),
    ("monitor/", "finsent worker (other)"),
    ("faust/", "Faust"),
    ("mode/", "Faust"),
    ("asyncio/", "asyncio event loop"),
    ("concurrent/futures", "thread pool"),
    ("threading.py", "thread pool"),
]


def py_spy() -> str | None:
    exe = Path(sys.executable).parent / "py-spy"
    return str(exe) if exe.is_file() else shutil.which("py-spy")


class Profiler:
    """py-spy record on `pid` from start() to stop(); a no-op when py-spy is not installed."""

    def __init__(self, pid: int, out: Path, rate: int = 50) -> None:
        self.pid, self.out, self.rate = pid, out, rate
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Profiler:
        exe = py_spy()
        if exe:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            cmd = [exe, "record", "--pid", str(self.pid), "--rate", str(self.rate), "--format", "raw",
                   "--nonblocking", "-o", str(self.out)]  # fmt: skip
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def stop(self) -> dict[str, Any] | None:
        if not self.proc:
            return None
        self.proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None
        return summarise(self.out) if self.out.is_file() else None


def component(stack: str) -> str:
    frames = stack.split(";")
    for frame in reversed(frames):
        for needle, name in COMPONENTS:
            if needle in frame:
                return name
    return "other"


def summarise(raw: Path) -> dict[str, Any]:
    """Share of on-CPU samples per component, from py-spy's collapsed-stack output."""
    counts: Counter[str] = Counter()
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            counts[component(stack)] += int(n)
    total = sum(counts.values())
    rows = [{"component": k, "share": round(v / total, 3), "samples": v} for k, v in counts.most_common()]
    return {"samples": total, "rows": rows, "raw": str(raw)}
