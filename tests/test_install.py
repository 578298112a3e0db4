"""`pip install .` into a fresh environment, then run finsent from outside the repository.

The fresh environment borrows this one's dependencies (one path entry: the
test must not download anything) but gets finsent itself only from the
wheel pip builds, so a module or data file missing from the package, or a
default that only works inside a checkout, fails here.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from monitor.stream.broker import EmbeddedBroker, free_port
from tests.tiny_bundle import make_bundle

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding a pip-installed finsent; its bin directory."""
    root = tmp_path_factory.mktemp("install")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    lib = next((venv / "lib").glob("python3*/site-packages"))
    # Dependencies from this environment; finsent's own editable hook there is a .pth that is not read.
    (lib / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    py = venv / "bin" / "python"
    out = subprocess.run(
        [py, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-q", str(REPO)],
        capture_output=True, text=True, cwd=root, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    return venv / "bin"


def run(bin_dir: Path, *args: str, cwd: Path, timeout: float = 60, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        [str(bin_dir / "finsent"), *args], capture_output=True, text=True, cwd=cwd, timeout=timeout,
        env={**os.environ, "PYTHONPATH": "", **(env or {})},
    )  # fmt: skip


def test_installed_package_is_the_one_imported(installed: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [str(installed / "python"), "-c", "import monitor, monitor.cli.demo_view; print(monitor.__file__)"],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert str(installed.parent) in out.stdout and str(REPO) not in out.stdout
    assert run(installed, "--help", cwd=tmp_path).returncode == 0


def test_missing_model_is_one_clear_line(installed: Path, tmp_path: Path) -> None:
    out = run(installed, "worker", "--bootstrap", "127.0.0.1:9", cwd=tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "model" in lines[0] and "--model" in lines[0], out.stderr


def test_installed_worker_serves_a_model_from_anywhere(installed: Path, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    port = free_port()
    with EmbeddedBroker() as broker:
        proc = subprocess.Popen(
            [str(installed / "finsent"), "worker", "--model", str(bundle), "--bootstrap", broker.bootstrap,
             "--profile", "embedded", "--metrics-port", str(port), "--web-port", str(free_port()),
             "--datadir", str(tmp_path / "state"), "--app-id", "installed"],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": ""},
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 90
            body = ""
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                        body = r.read().decode()
                except OSError:
                    body = ""
                if "finsent_model_loaded 1.0" in body:
                    break
                time.sleep(0.5)
            assert "finsent_model_loaded 1.0" in body, proc.stdout.read().decode() if proc.poll() is not None else ""
        finally:
            proc.terminate()
            proc.wait(20)
