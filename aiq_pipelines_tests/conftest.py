"""Shared fixtures. The AIQ sandbox fixtures live in sandbox_support.py."""

pytest_plugins = ["aiq_pipelines_tests.sandbox_support"]
