"""The dependency audit's verdict on pip-audit reports (the audit itself runs in scripts/test.sh)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location("audit", Path(__file__).parent.parent / "scripts" / "audit.py")
assert spec and spec.loader
audit = importlib.util.module_from_spec(spec)
spec.loader.exec_module(audit)

CLEAN = {"dependencies": [{"name": "a", "version": "1", "vulns": []}, {"name": "b", "version": "2", "vulns": []}]}
VULN = {
    "dependencies": [
        {"name": "a", "version": "1", "vulns": [{"id": "GHSA-x", "fix_versions": ["1.1"]}]},
        {"name": "b", "version": "2", "vulns": []},
    ]
}
OFFLINE = {"dependencies": [{"name": "a", "skip_reason": "Dependency not found on PyPI"}]}


def test_clean_passes() -> None:
    lines, rc = audit.verdict(CLEAN)
    assert rc == 0 and "2 audited" in lines[-1] and "0 vulnerable" in lines[-1]


def test_vulnerability_fails_and_names_the_fix() -> None:
    lines, rc = audit.verdict(VULN)
    assert rc == 1
    assert lines[0] == "audit: a 1: GHSA-x (fixed in 1.1)"


def test_unreachable_service_is_reported_not_passed_off_as_clean() -> None:
    lines, rc = audit.verdict(OFFLINE)
    assert rc == 0 and any("nothing was audited" in ln for ln in lines)
    assert audit.verdict(OFFLINE, strict=True)[1] == 1
