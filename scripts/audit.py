"""Audit the installed dependencies for known vulnerabilities with pip-audit.

Fails (exit 1) when pip-audit finds a vulnerability in an installed
package. When no vulnerability service can be reached (an offline or
mirrored index answers "not found on PyPI" for every package), it says so
plainly and exits 0: an audit that could not run is reported, not passed
off as clean. `--strict` makes that case fail too.

    .venv/bin/python scripts/audit.py [--strict] [--ignore GHSA-... ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strict", action="store_true", help="fail when packages could not be audited")
    ap.add_argument("--ignore", nargs="*", default=[], metavar="ID", help="vulnerability ids to accept (say why)")
    args = ap.parse_args(argv)
    site = sysconfig.get_paths()["purelib"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "audit.json"
        cmd = [
            sys.executable,
            "-m",
            "pip_audit",
            "--path",
            site,
            "--progress-spinner",
            "off",
            "-f",
            "json",
            "-o",
            str(out),
        ]
        for vid in args.ignore:
            cmd += ["--ignore-vuln", vid]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if not out.is_file():
            print(f"audit: pip-audit did not run: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
            return 1 if args.strict else 0
        report = json.loads(out.read_text())
    lines, rc = verdict(report, args.strict)
    print("\n".join(lines))
    return rc


def verdict(report: dict[str, Any], strict: bool = False) -> tuple[list[str], int]:
    """Lines to print and the exit code for one pip-audit JSON report."""
    lines = []
    deps = report.get("dependencies", [])
    skipped = [d for d in deps if "skip_reason" in d]
    vulnerable = [d for d in deps if d.get("vulns")]
    for d in vulnerable:
        for v in d["vulns"]:
            fix = ", ".join(v.get("fix_versions") or []) or "no fix yet"
            lines.append(f"audit: {d['name']} {d['version']}: {v['id']} (fixed in {fix})")
    audited = len(deps) - len(skipped)
    lines.append(
        f"audit: {len(deps)} packages, {audited} audited, {len(skipped)} not auditable, {len(vulnerable)} vulnerable"
    )
    if skipped and not audited:
        lines.append(
            "audit: WARNING no vulnerability service answered (offline or mirrored index): nothing was audited"
        )
    if vulnerable or (skipped and strict):
        return lines, 1
    return lines, 0


if __name__ == "__main__":
    sys.exit(main())
