"""The AIQ sandbox's command line: switches, errors, --help, and --refuse-keys in a running process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from aiq_pipelines_tests.support.sandbox import GENEROUS_LIMITS
from aiq_pipelines_tests.support.sandbox_api import member, post, visit

# -- command line --------------------------------------------------------------------------------------------------


def _run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiq_sandbox", *args],
        env=env, capture_output=True, text=True, timeout=60,
    )


def test_cli_without_an_api_key_says_how_to_give_one(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "AIQ_API_KEY"}
    result = _run_cli("--db", str(tmp_path / "s.db"), env=env)
    assert result.returncode == 2
    assert "--api-key" in result.stderr and "AIQ_API_KEY" in result.stderr


def test_cli_names_the_bad_switch(tmp_path: Path) -> None:
    env = {**os.environ, "AIQ_API_KEY": "k"}
    result = _run_cli("--db", str(tmp_path / "s.db"), "--fault-drop", "1.5", env=env)
    assert result.returncode == 2 and "--fault-drop" in result.stderr
    result = _run_cli("--db", str(tmp_path / "s.db"), "--fault-5xx", "0.6", "--fault-slow", "0.6", env=env)
    assert result.returncode == 2 and "add up to at most 1" in result.stderr
    result = _run_cli("--db", str(tmp_path / "s.db"), "--drop-keys", "u-1:twice", env=env)
    assert result.returncode == 2 and "--drop-keys: 'u-1:twice': expected pos_user or pos_user:N" in result.stderr


def test_cli_help_documents_every_switch_with_its_default() -> None:
    result = _run_cli("--help", env={**os.environ, "AIQ_API_KEY": "do-not-print-me"})
    assert result.returncode == 0 and "do-not-print-me" not in result.stdout
    for switch in ("--host", "--port", "--db", "--api-key", "--uid", "--per-second", "--per-minute", "--per-hour",
                   "--bulk-max", "--inventory-max", "--fault-seed", "--fault-5xx", "--fault-429", "--fault-slow",
                   "--fault-drop", "--slow-seconds", "--retry-after", "--apply-delay", "--drop-personas", "--drop-seed",
                   "--drop-keys", "--blank-phones", "--reset"):
        assert switch in result.stdout
    assert result.stdout.count("(default:") >= 24


def test_refuse_keys_refuses_the_listed_records_whole_batch(sandbox_factory) -> None:
    sandbox = sandbox_factory(refuse_keys="r-1,u-9", **GENEROUS_LIMITS)

    refused = post(sandbox, "createUpdateSales", [{"visit": visit(f"r-{n}")} for n in range(3)])
    accepted = post(sandbox, "createUpdateSales", [{"visit": visit("r-0")}, {"visit": visit("r-2")}])

    assert refused.status_code == 400
    assert refused.json()["errors"] == [{"message": "[1]: record r-1 refused by AIQ (sandbox --refuse-keys)"}]
    assert accepted.status_code == 200
    assert [s["pos_id"] for s in sandbox.state()["sales"]] == ["r-0", "r-2"]
    assert post(sandbox, "createUpdateMembers", [{"member": member("u-9")}]).status_code == 400
