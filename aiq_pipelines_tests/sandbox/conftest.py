"""The ``shared`` fixture of the sandbox tests (``sandbox`` and ``sandbox_factory`` live in support/sandbox.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aiq_pipelines_tests.support.sandbox import GENEROUS_LIMITS, Sandbox, run_sandbox


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """One sandbox for tests that only send refused requests, so its state stays empty."""
    with run_sandbox(tmp_path_factory.mktemp("shared") / "sandbox.db", **GENEROUS_LIMITS) as running:
        yield running
