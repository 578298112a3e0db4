"""What flushing denormals to zero buys: the same graph and batch, flag on vs off, each in its own process.

onnxruntime applies `session.set_denormal_as_zero` to a session's own pool
threads, but to the calling thread only for the first session a process
creates, so two sessions in one process would not give a clean comparison.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def measure(model: Path, feeds: dict[str, np.ndarray], repeat: int, workdir: Path) -> dict[str, float]:
    """texts/s of one batch with denormals flushed and kept, each measured by a fresh interpreter."""
    npz = workdir / f"{model.stem}.feeds.npz"
    np.savez(npz, **feeds)
    out = {}
    for label, flag in (("flushed", "1"), ("kept", "0")):
        r = subprocess.run([sys.executable, "-m", "bench.denormals", str(model), str(npz), flag, str(repeat)],
                           capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parent.parent)  # fmt: skip
        out[label] = json.loads(r.stdout.strip().splitlines()[-1])["texts_per_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model", type=Path)
    ap.add_argument("feeds", type=Path)
    ap.add_argument("flush", choices=("0", "1"))
    ap.add_argument("repeat", type=int)
    a = ap.parse_args()
    import onnxruntime as ort

    from monitor.model.session import choose_providers, session_options

    opts = session_options(denormals_as_zero=a.flush == "1")
    sess = ort.InferenceSession(str(a.model), opts, providers=choose_providers("auto"))
    feeds = dict(np.load(a.feeds))
    n = len(next(iter(feeds.values())))
    sess.run(None, feeds)
    ts = []
    for _ in range(a.repeat):
        t = time.perf_counter()
        sess.run(None, feeds)
        ts.append(time.perf_counter() - t)
    print(json.dumps({"texts_per_s": round(n / statistics.median(ts), 1)}))


if __name__ == "__main__":
    main()
