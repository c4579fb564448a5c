"""Schemathesis against the live pull API (a real uvicorn process over a staged sync database), every check, with a
key and without one: any finding fails the test.

Two things are set for the run and said here. The hooks (support/schemathesis_hooks.py) keep *positive* cases to the
rules between parameters that the document states in words and OpenAPI cannot express (a cursor is valid only as
issued; incremental or backfill, not both; a backfill's ends in order and at most 31 days apart): such a request is
invalid however well each parameter is formed. And the failed-key allowance is raised for this server, since the auth
checks expect every refused key to be a 401, while past the allowance the service answers 429
(test_hardening.py tests that throttle). Examples are bounded so the run stays a few seconds long.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from aiq_pipelines_tests.support.pull import KEY

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("authorization", [f"Bearer {KEY}", None], ids=["with-key", "without-key"])
def test_schemathesis_finds_nothing(demo_day, pull_server_factory, tmp_path, authorization):
    server = pull_server_factory(demo_day, requests_per_minute=1_000_000, failed_keys_per_minute=1_000_000)
    command = [sys.executable, "-m", "schemathesis.cli", "run", f"{server.base_url}/openapi.json", "--checks", "all",
               "--max-examples", "25", "--seed", "29", "--no-color", "--report-dir", str(tmp_path / "report")]
    if authorization:
        command += ["--header", f"Authorization: {authorization}"]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "aiq_pipelines_tests.support.schemathesis_hooks",
           "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)

    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "No issues found" in done.stdout or " passed" in done.stdout, done.stdout[-3000:]
    assert KEY not in server.log()
