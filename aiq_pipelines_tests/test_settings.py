"""Settings: documented defaults, and start-up errors that name the variable and what it expects."""

import datetime as dt
import subprocess
import sys

import pytest

from aiq_pipelines.settings import SettingsError, load_settings


def test_defaults_are_the_documented_ones():
    settings = load_settings()
    assert settings.pos_timezone == "America/Denver"
    assert settings.pos_start_date == dt.date(2026, 1, 1)
    assert settings.pos_database_url.endswith(".data/pos.db")
    assert settings.sync_database_url.endswith(".data/sync.db")
    assert (settings.aiq_requests_per_second, settings.aiq_requests_per_minute, settings.aiq_requests_per_hour) == (5, 120, 2000)
    assert settings.aiq_rate_limit_margin_seconds == 0.1
    assert settings.aiq_base_url == "http://127.0.0.1:8765"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("POS_TIMEZONE", "Mars/Olympus", "POS_TIMEZONE: expected an IANA time zone name"),
        ("POS_START_DATE", "yesterday", "POS_START_DATE: "),
        ("POS_DATABASE_URL", "not a url", "POS_DATABASE_URL: expected a SQLAlchemy URL"),
        ("AIQ_BASE_URL", "lab.alpineiq.com", "AIQ_BASE_URL: expected an http(s) URL"),
        ("AIQ_BATCH_SIZE_INVENTORY", "250", "AIQ_BATCH_SIZE_INVENTORY: Input should be less than or equal to 100"),
        ("AIQ_RATE_LIMIT_MARGIN_SECONDS", "-0.05",
         "AIQ_RATE_LIMIT_MARGIN_SECONDS: Input should be greater than or equal to 0"),
        ("QUARANTINE_MAX_RATE", "2", "QUARANTINE_MAX_RATE: Input should be less than or equal to 1"),
        ("POS_QUERIES_FILE", "/nonexistent/queries.yaml", "POS_QUERIES_FILE: expected the path of an existing YAML file"),
    ],
)
def test_a_bad_setting_names_itself(monkeypatch, variable, value, message):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert message in str(raised.value)


def test_inconsistent_rate_limits_are_refused(monkeypatch):
    monkeypatch.setenv("AIQ_REQUESTS_PER_MINUTE", "3")
    with pytest.raises(SettingsError, match="AIQ_REQUESTS_PER_MINUTE must be at least AIQ_REQUESTS_PER_SECOND"):
        load_settings()


def test_the_code_location_refuses_to_load_with_a_bad_setting():
    result = subprocess.run(
        [sys.executable, "-c", "import aiq_pipelines.definitions"],
        env={"POS_TIMEZONE": "Mars/Olympus", "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
    )
    assert result.returncode != 0
    assert "POS_TIMEZONE: expected an IANA time zone name such as America/Denver" in result.stderr


def test_a_bad_cron_names_its_setting(monkeypatch):
    monkeypatch.setenv("INVENTORY_SYNC_CRON", "every hour")
    with pytest.raises(SettingsError, match="INVENTORY_SYNC_CRON: expected a cron expression of five fields"):
        load_settings()
    monkeypatch.setenv("INVENTORY_SYNC_CRON", "*/15 * * * *")
    assert load_settings().inventory_sync_cron == "*/15 * * * *"
