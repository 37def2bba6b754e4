"""experiments/client_costs.py end to end on a private bus Redis (a few calls per case): the files
and the headline the convention asks for, and both table loads agreeing (asserted inside)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_client_costs_writes_its_files_and_headline(tmp_path: Path) -> None:
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed")
    out = subprocess.run([sys.executable, str(ROOT / "experiments" / "client_costs.py"),
                          "--quick", "--runs", "3", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=120, check=True)
    headline = json.loads(out.stdout.strip().splitlines()[-1])
    assert headline["runs"] == 3 and headline["table_1000_ms_flattened"] > 0
    doc = json.loads((tmp_path / "client_costs.json").read_text())
    assert {r["case"] for r in doc["runs"]} >= {"table HGETALL", "table flattened", "sha256 1 MB"}
    assert all(len(r["ms"]) == 3 for r in doc["runs"])
