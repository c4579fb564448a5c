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
    assert (settings.audit_after_hours, settings.audit_budget_share, settings.audit_max_missing_rate,
            settings.audit_page_size) == (24, 0.05, 0.01, 100)


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
        ("AUDIT_BUDGET_SHARE", "0", "AUDIT_BUDGET_SHARE: Input should be greater than 0"),
        ("AUDIT_PAGE_SIZE", "5000", "AUDIT_PAGE_SIZE: Input should be less than or equal to 1000"),
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


ACCOUNTS = """
accounts:
  - name: colorado
    uid: "1001"
    base_url: https://lab.alpineiq.com/
    api_key_env: AIQ_API_KEY_COLORADO
    locations: [STORE-01, STORE-02]
    default: true
  - name: arizona
    uid: "1002"
    base_url: https://lab.alpineiq.com
    api_key_env: AIQ_API_KEY_ARIZONA
    locations: [STORE-PHX]
    requests_per_second: 2
"""


def test_without_an_accounts_file_one_default_account_gets_every_store():
    (account,) = load_settings(aiq_uid="u-1", aiq_base_url="https://lab.alpineiq.com").aiq_accounts
    assert (account.name, account.uid, account.base_url, account.api_key_env) == (
        "default", "u-1", "https://lab.alpineiq.com", "AIQ_API_KEY")
    assert account.default and account.locations == ()


def test_an_accounts_file_maps_stores_to_accounts(tmp_path, monkeypatch):
    path = tmp_path / "accounts.yaml"
    path.write_text(ACCOUNTS)
    monkeypatch.setenv("AIQ_ACCOUNTS_FILE", str(path))
    colorado, arizona = load_settings().aiq_accounts
    assert (colorado.name, colorado.locations, colorado.default, colorado.requests_per_second) == (
        "colorado", ("STORE-01", "STORE-02"), True, None)
    assert (arizona.uid, arizona.api_key_env, arizona.requests_per_second) == ("1002", "AIQ_API_KEY_ARIZONA", 2)
    assert colorado.ledger_account == "https://lab.alpineiq.com|1001", "the trailing slash is not a second account"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("[STORE-PHX]", "[STORE-01]"), "location 'STORE-01' is listed by both 'colorado' and 'arizona'"),
        (("requests_per_second: 2", "requests_per_second: 2\n    default: true"), "at most one account may be default"),
        (("name: arizona", "name: Arizona"), "accounts.1.name: String should match pattern"),
        (("name: arizona", "name: colorado"), "account names must be unique"),
        (('uid: "1002"', 'uid: "1001"'), "two accounts have the same base_url and uid"),
        (("api_key_env: AIQ_API_KEY_ARIZONA", "api_key: secret"), "accounts.1.api_key_env: Field required"),
        (("locations: [STORE-PHX]", "locations: []"), "account 'arizona' lists no locations and is not default"),
        (("locations: [STORE-PHX]", 'locations: [""]'), "accounts.1.locations.0: String should have at least 1"),
        (("base_url: https://lab.alpineiq.com\n", "base_url: lab.alpineiq.com\n"), "accounts.1.base_url: expected"),
        (("accounts:", "accounts: ["), "not valid YAML at line 3, column 3"),
        (("accounts:", "stores:"), "stores: Extra inputs are not permitted"),
        (("requests_per_second: 2", "requests_per_second: 500"),
         "account 'arizona': its limits (500/s, 120/min, 2000/h, from the file or AIQ_REQUESTS_*) must not shrink"),
    ],
)
def test_a_bad_accounts_file_names_the_setting_and_the_problem(tmp_path, monkeypatch, change, message):
    path = tmp_path / "accounts.yaml"
    path.write_text(ACCOUNTS.replace(*change, 1))
    monkeypatch.setenv("AIQ_ACCOUNTS_FILE", str(path))
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert str(raised.value).startswith("invalid settings: AIQ_ACCOUNTS_FILE: ")
    assert message in str(raised.value)
    assert "secret" not in str(raised.value)


def test_a_missing_accounts_file_is_named(monkeypatch):
    monkeypatch.setenv("AIQ_ACCOUNTS_FILE", "/nonexistent/accounts.yaml")
    with pytest.raises(SettingsError, match="AIQ_ACCOUNTS_FILE: expected the path of an existing YAML file"):
        load_settings()


def test_several_accounts_with_custom_sales_need_the_shopper_stores_query(tmp_path, monkeypatch):
    accounts, queries = tmp_path / "accounts.yaml", tmp_path / "queries.yaml"
    accounts.write_text(ACCOUNTS)
    queries.write_text("transactions: SELECT * FROM sales WHERE sold_at >= :window_start AND sold_at < :window_end\n")
    monkeypatch.setenv("POS_QUERIES_FILE", str(queries))
    assert load_settings().pos_queries_file == queries, "one account needs no lookup"

    monkeypatch.setenv("AIQ_ACCOUNTS_FILE", str(accounts))
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert "POS_QUERIES_FILE replaces the transactions query but gives no shopper_stores query" in str(raised.value)

    queries.write_text(queries.read_text() + "shopper_stores: SELECT DISTINCT member_id AS customer_id, store_code AS "
                       "location_id FROM sales WHERE member_id IN :customer_ids ORDER BY member_id\n")
    assert load_settings().shoppers_split
