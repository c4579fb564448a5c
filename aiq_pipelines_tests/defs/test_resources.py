"""AiqResource: defaults from settings, a working client, and an API key that never shows."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from aiq_pipelines.aiq.errors import AiqError
from aiq_pipelines.aiq.payloads import Member, Visit, VisitLine
from aiq_pipelines.definitions import defs
from aiq_pipelines.defs.resources import AiqResource
from aiq_pipelines.settings import get_settings, load_settings
from aiq_pipelines_tests.support.sandbox import Sandbox

LITERAL_KEY = "literal-key-that-must-not-show-3f9a"


def resource_for(sandbox: Sandbox, tmp_path: Path, **changes: object) -> AiqResource:
    fields: dict[str, object] = dict(
        api_key=sandbox.api_key, base_url=sandbox.base_url, uid=sandbox.uid,
        rate_limit_database_url=f"sqlite:///{tmp_path / 'sync.db'}",
    )
    fields.update(changes)
    return AiqResource.from_settings(load_settings(), **fields)


def test_the_key_is_absent_from_repr_str_and_dumps() -> None:
    resource = AiqResource.from_settings(load_settings(), api_key=LITERAL_KEY, base_url="http://127.0.0.1:1", uid="acct")
    assert resource.api_key == LITERAL_KEY
    for text in (repr(resource), str(resource), str(resource.model_dump()), resource.model_dump_json(), f"{resource!r}"):
        assert LITERAL_KEY not in text
    assert "acct" in repr(resource)


def test_the_code_locations_resource_is_built_from_the_settings() -> None:
    resource = defs.resources["aiq"]
    settings = get_settings()
    assert isinstance(resource, AiqResource) and resource.api_key == dg.EnvVar("AIQ_API_KEY")
    assert (resource.base_url, resource.uid, resource.rate_limit_database_url) == (
        settings.aiq_base_url, settings.aiq_uid, settings.sync_database_url,
    )
    assert (resource.requests_per_second, resource.requests_per_minute, resource.requests_per_hour) == (
        settings.aiq_requests_per_second, settings.aiq_requests_per_minute, settings.aiq_requests_per_hour,
    )
    assert resource.rate_limit_margin_seconds == settings.aiq_rate_limit_margin_seconds
    assert (resource.batch_size_sales, resource.batch_size_members, resource.batch_size_inventory) == (
        settings.aiq_batch_size_sales, settings.aiq_batch_size_members, settings.aiq_batch_size_inventory,
    )
    assert (resource.timeout_seconds, resource.max_attempts, resource.max_retry_seconds) == (
        settings.aiq_timeout_seconds, settings.aiq_max_attempts, settings.aiq_max_retry_seconds,
    )
    assert resource.max_in_flight == settings.aiq_max_in_flight
    pos, sync = defs.resources["pos"], defs.resources["sync"]
    assert (pos.url, pos.chunk_size, pos.queries_file) == (settings.pos_database_url, settings.extract_chunk_size, None)
    assert (sync.url, sync.timezone, sync.quarantine_max_rate, sync.quarantine_min_records) == (
        settings.sync_database_url, settings.pos_timezone, settings.quarantine_max_rate, settings.quarantine_min_records,
    )


def test_the_rate_limit_margin_reaches_the_limiter(sandbox: Sandbox, tmp_path: Path) -> None:
    resource = resource_for(sandbox, tmp_path, requests_per_second=1, rate_limit_margin_seconds=0.4)
    with resource.open_client() as client:
        client.upsert_member(Member(pos_user="C-1"))
        client.upsert_member(Member(pos_user="C-2"))
    with sa.create_engine(f"sqlite:///{tmp_path / 'sync.db'}").connect() as conn:
        first, second = conn.scalars(sa.text("SELECT sent_at FROM aiq_rate_limit_sends ORDER BY sent_at")).all()
    assert second - first >= 1.4, "with 1 request a second, the second send waits out the window and the margin"


def test_open_client_talks_to_aiq_and_keeps_the_budget_in_the_sync_database(sandbox: Sandbox, tmp_path: Path) -> None:
    resource = resource_for(sandbox, tmp_path)
    with resource.open_client() as client:
        ack = client.upsert_member(Member(pos_user="C-1"))
        assert client.stats.requests == 1
    assert sandbox.state()["members"][0]["contactID"] == ack.contact_id
    engine = sa.create_engine(resource.rate_limit_database_url)
    with engine.connect() as conn:
        accounts = conn.execute(sa.text("SELECT account FROM aiq_rate_limit_sends")).scalars().all()
    engine.dispose()
    assert accounts == [f"{sandbox.base_url}|{sandbox.uid}"]


@pytest.mark.parametrize("key", ["", "   "])
def test_an_empty_key_fails_naming_the_variable(tmp_path: Path, key: str) -> None:
    resource = AiqResource.from_settings(
        load_settings(), api_key=key, base_url="http://127.0.0.1:1", uid="acct",
        rate_limit_database_url=f"sqlite:///{tmp_path / 's.db'}",
    )
    with pytest.raises(AiqError, match="AIQ_API_KEY"), resource.open_client():
        pass


@dg.asset
def pushed_sale(aiq: AiqResource) -> dg.MaterializeResult:
    """A one-sale push, the way the pipeline's assets use the resource."""
    with aiq.open_client() as client:
        outcomes = list(
            client.send_sales(
                [(
                    "R-1",
                    Visit(
                        pos_id="R-1", transaction_date=dt.datetime(2026, 1, 2, tzinfo=dt.UTC),
                        transaction_total=Decimal("5"), location="Store",
                        visit_details_attributes=(VisitLine(sku="s", price=Decimal("5"), quantity=Decimal("1")),),
                    ),
                )]
            )
        )
        stats = client.stats
    return dg.MaterializeResult(metadata={"sent": len(outcomes[0].accepted), "requests": stats.requests})


def test_materializes_with_the_key_from_the_environment(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIQ_API_KEY", sandbox.api_key)
    resource = resource_for(sandbox, tmp_path, api_key=dg.EnvVar("AIQ_API_KEY"))
    with dg.instance_for_test() as instance:
        result = dg.materialize([pushed_sale], resources={"aiq": resource}, instance=instance)
        assert result.success
        logs = [str(entry) for entry in instance.all_logs(result.run_id)]
    assert [s["pos_id"] for s in sandbox.state()["sales"]] == ["R-1"]
    assert logs and not any(sandbox.api_key in entry for entry in logs)


def test_an_unset_key_variable_is_named(sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIQ_API_KEY", raising=False)
    resource = resource_for(sandbox, tmp_path, api_key=dg.EnvVar("AIQ_API_KEY"))
    with pytest.raises(dg.DagsterInvalidConfigError, match="AIQ_API_KEY"):
        dg.materialize([pushed_sale], resources={"aiq": resource})
    assert sandbox.state()["sales"] == []


ACCOUNTS_PROBE = """
import json
from aiq_pipelines.definitions import defs
graph = defs.resolve_asset_graph()
resources = {key: {"key_env": r.api_key.env_var_name, "base_url": r.base_url, "uid": r.uid,
                   "per_second": r.requests_per_second, "per_minute": r.requests_per_minute}
             for key, r in defs.resources.items() if key.startswith("aiq")}
print(json.dumps({"assets": sorted(k.to_user_string() for k in graph.get_all_asset_keys()), "resources": resources}))
"""


def test_an_accounts_file_gives_each_account_its_assets_and_its_resource(tmp_path: Path) -> None:
    path = tmp_path / "accounts.yaml"
    path.write_text(
        "accounts:\n"
        "  - {name: colorado, uid: c-1, base_url: 'https://lab.alpineiq.com', api_key_env: KEY_CO, default: true}\n"
        "  - {name: arizona, uid: a-1, api_key_env: KEY_AZ, locations: [STORE-PHX], requests_per_second: 2}\n"
    )
    env = {**os.environ, "AIQ_ACCOUNTS_FILE": str(path), "AIQ_REQUESTS_PER_MINUTE": "90"}
    probe = subprocess.run([sys.executable, "-c", ACCOUNTS_PROBE], env=env, capture_output=True, text=True, check=True)
    loaded = json.loads(probe.stdout.strip().splitlines()[-1])

    assert [key for key in loaded["assets"] if "aiq" in key] == [
        "arizona/aiq_delivery_audit", "arizona/aiq_inventory", "arizona/aiq_personas", "arizona/aiq_sales",
        "colorado/aiq_delivery_audit", "colorado/aiq_inventory", "colorado/aiq_personas", "colorado/aiq_sales",
    ]
    assert loaded["resources"] == {
        "aiq_colorado": {"key_env": "KEY_CO", "base_url": "https://lab.alpineiq.com", "uid": "c-1",
                         "per_second": 5, "per_minute": 90},
        "aiq_arizona": {"key_env": "KEY_AZ", "base_url": "http://127.0.0.1:8765", "uid": "a-1",
                        "per_second": 2, "per_minute": 90},
    }
