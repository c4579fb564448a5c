"""Fixtures of the reliability suite: the API key in the environment, and sandboxes that expect it."""

from collections.abc import Callable
from typing import Any

import pytest

from aiq_pipelines_tests.support.reliability import API_KEY
from aiq_pipelines_tests.support.sandbox import GENEROUS_LIMITS, Sandbox


@pytest.fixture
def aiq_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """AIQ_API_KEY set for this test, as production sets it; the resources read it through dg.EnvVar."""
    monkeypatch.setenv("AIQ_API_KEY", API_KEY)
    return API_KEY


@pytest.fixture
def start_sandbox(sandbox_factory: Callable[..., Sandbox], aiq_key: str) -> Callable[..., Sandbox]:
    """Start a sandbox expecting the suite's key, with limits the tests never wait on unless ``options`` say so."""

    def start(**options: Any) -> Sandbox:
        return sandbox_factory(api_key=aiq_key, **{**GENEROUS_LIMITS, **options})

    return start
