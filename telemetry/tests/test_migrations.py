"""The move of TelemetrySample from devices to telemetry is state-only: the models and
the migrations agree, and a database migrated before the move keeps its rows, its
table and the samples' content type (so permissions on it) after it."""

import datetime as dt

import pytest
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from telemetry.models import TelemetrySample

BEFORE = [
    ("devices", "0006_device_claimed_at_empty_secrets"),
    ("telemetry", None),
]


def test_models_and_migrations_agree(db):
    # Exits 1 (SystemExit) when a model change has no migration.
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


def _migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor


@pytest.mark.slow
def test_rows_written_before_the_move_are_there_after_it(transactional_db, device_a):
    ct = ContentType.objects.get_for_model(TelemetrySample)
    leaves = MigrationExecutor(connection).loader.graph.leaf_nodes()
    try:
        old = _migrate(BEFORE).loader.project_state(BEFORE[:1]).apps
        OldSample = old.get_model("devices", "TelemetrySample")
        assert OldSample._meta.db_table == TelemetrySample._meta.db_table
        at = dt.datetime(2026, 11, 2, 10, 0, tzinfo=dt.UTC)
        OldSample.objects.bulk_create(
            OldSample(
                tenant_id=device_a.tenant_id,
                device_id=device_a.pk,
                ts=at + dt.timedelta(minutes=i),
                temperature=20.0 + i,
                pump=i % 2 == 0,
                valve=1,
                rssi=-60,
            )
            for i in range(5)
        )
        before = list(
            OldSample.objects.order_by("id").values_list("id", "ts", "temperature")
        )
        old_ct = old.get_model("contenttypes", "ContentType")
        assert old_ct.objects.get(pk=ct.pk).app_label == "devices"
    finally:
        _migrate(leaves)
    after = list(
        TelemetrySample.objects.order_by("id").values_list("id", "ts", "temperature")
    )
    assert after == before and len(after) == 5
    assert TelemetrySample.objects.filter(device=device_a).count() == 5
    assert device_a.samples.count() == 5  # the reverse accessor is still "samples"
    moved = ContentType.objects.get(pk=ct.pk)
    assert (moved.app_label, moved.model) == ("telemetry", "telemetrysample")
