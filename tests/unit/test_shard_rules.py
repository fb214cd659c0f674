"""Shards without a store: the history of a tenant's shard count, the settings that change it, the shard rules per
kind, hub partition keys, and how shards' figures combine."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from metering.core.events import UsageEvent
from metering.core.meters import Aggregation, load_catalog
from metering.core.periods import DEFAULT_HISTORY, TenantSchedule, period_in
from metering.core.shards import (
    DEFAULT_SHARDS,
    ShardChange,
    ShardsError,
    change_shards,
    history_from_json,
    history_json,
    shards_at,
)
from metering.ledger import keys
from metering.ledger.cells import Cell
from metering.ledger.placement import PLACEMENTS, applying_shard, value_shard
from metering.ledger.routing import by_shard, hub_key
from metering.ledger.rows import StateRow
from metering.ledger.shards import ACROSS, all_closed, combine_shards, period_state
from metering.quotas.plans import load_plans
from metering.stores import Row
from metering.tenants.records import DEFAULT_RECORD, TenantError, TenantRecord, TenantUpdate, apply_change

CATALOG = load_catalog()
PLANS = load_plans(None, CATALOG)
NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)


def change(record: TenantRecord, **fields: object) -> TenantRecord:
    return apply_change(
        record,
        TenantUpdate.model_validate(fields),
        plans=PLANS,
        catalog=CATALOG,
        now=NOW,
        not_before=NOW + timedelta(minutes=10),
        closed=lambda _period: False,
    )


def test_a_period_has_the_count_in_force_at_its_start():
    history = (ShardChange(1, None), ShardChange(4, DEC))
    november = period_in(DEFAULT_HISTORY, NOW)
    december = period_in(DEFAULT_HISTORY, DEC)
    schedule = TenantSchedule(lambda _t: DEFAULT_HISTORY, lambda _t: history)
    assert (schedule.shards("t", november), schedule.shards("t", december)) == (1, 4)
    assert shards_at(history, DEC - timedelta(microseconds=1)) == 1
    # A count that took effect inside a period (its terms moved the boundary) applies from the next period only.
    assert shards_at(history, DEC + timedelta(days=3)) == 4
    assert TenantSchedule(lambda _t: DEFAULT_HISTORY).shards("t", november) == 1


def test_a_change_takes_effect_at_the_next_boundary_and_a_pending_one_can_be_changed_or_cancelled():
    record = change(DEFAULT_RECORD, shards=4)
    assert record.shards == (ShardChange(1, None), ShardChange(4, DEC))
    assert change(record, shards=8).shards == (ShardChange(1, None), ShardChange(8, DEC))
    assert change(record, shards=1).shards == DEFAULT_SHARDS  # back to what is in force: nothing pending
    assert change(record, plan="pro").shards == record.shards  # other fields leave it
    # New terms in the same change: the count follows the first boundary of the terms as they will be.
    both = change(DEFAULT_RECORD, shards=2, billing_anchor_day=15)
    assert both.shards[-1] == ShardChange(2, both.history[-1].effective_from)


def test_a_change_already_in_force_never_changes():
    settled = (ShardChange(1, None), ShardChange(4, NOW - timedelta(days=1)))
    assert change_shards(settled, 2, DEC, NOW) == (*settled, ShardChange(2, DEC))
    assert change_shards(settled, 4, DEC, NOW) == settled


@pytest.mark.parametrize("value", [0, 17, "4", 2.0])
def test_counts_outside_1_to_16_or_not_integers_are_refused(value):
    with pytest.raises(ValueError, match="shards"):
        change(DEFAULT_RECORD, shards=value)
    with pytest.raises(ShardsError):
        ShardChange(17, None)


def test_too_many_changes_are_refused_naming_the_field():
    history = (ShardChange(1, None), *(ShardChange(2 + i % 2, NOW - timedelta(days=200 - i)) for i in range(99)))
    record = TenantRecord(None, {}, DEFAULT_HISTORY, shards=history)
    with pytest.raises(TenantError) as refused:
        change(record, shards=2 if history[-1].shards == 3 else 3)
    assert [e.field for e in refused.value.errors] == ["shards"]


def test_the_stored_history_round_trips_and_older_rows_have_one_shard():
    history = (ShardChange(1, None), ShardChange(4, DEC))
    assert history_from_json(history_json(history)) == history
    assert history_from_json(None) == DEFAULT_SHARDS
    record = change(DEFAULT_RECORD, shards=4)
    row = Row("settings", "etag", record.to_json("2026-11-24T12:00:00Z"))
    assert TenantRecord.from_row(row).shards == record.shards
    del row.data["shards"]
    assert TenantRecord.from_row(row).shards == DEFAULT_SHARDS


def test_the_key_shard_is_the_dedupe_digest_modulo_the_count_and_spreads_evenly():
    digest = keys.event_digest("acme", "e:evt-1")
    assert keys.key_shard("acme", "e:evt-1", 4) == int(digest[:8], 16) % 4
    assert keys.marker_shard(keys.marker_key("acme", "e:evt-1"), 4) == keys.key_shard("acme", "e:evt-1", 4)
    assert keys.key_shard("acme", "e:evt-1", 1) == 0
    spread = Counter(keys.key_shard("acme", f"e:{i}", 4) for i in range(4000))
    assert set(spread) == {0, 1, 2, 3}
    assert all(800 < n < 1200 for n in spread.values())
    assert keys.partition_keys("acme", period_in(DEFAULT_HISTORY, NOW), 3) == [
        "acme|2026-11-01|0",
        "acme|2026-11-01|1",
        "acme|2026-11-01|2",
    ]


def event(i: int, metric: str, **fields: object) -> UsageEvent:
    fields.setdefault("timestamp", NOW)
    return UsageEvent(event_id=f"e{i}", tenant_id="acme", metric=metric, quantity="1", source="t", **fields)


def test_levels_and_sums_apply_in_the_key_shard_and_distinct_values_in_their_value_shard():
    users = CATALOG.meters["users.active"]
    assert set(PLACEMENTS) == set(Aggregation)
    for i in range(50):
        for metric in ("api.requests", "storage.gb_peak", "seats.licensed", "credits.balance", "reports.generated"):
            shard = keys.key_shard("acme", f"e:e{i}", 4)
            assert applying_shard(CATALOG.meters[metric], event(i, metric), shard, 4) == shard
        # Whatever the event's key, one user's events all apply in one shard.
        applied = {applying_shard(users, event(i, "users.active", user_id="ann"), k, 4) for k in range(4)}
        assert applied == {value_shard(users, "ann", 4)}
    assert applying_shard(users, event(1, "users.active", user_id="ann"), 0, 1) == 0


def test_hub_keys_follow_the_applying_shard_of_each_events_own_period():
    users = CATALOG.meters["users.active"]
    november = event(1, "api.requests")
    assert hub_key(november, 1, CATALOG) == "acme"
    assert hub_key(november, 4, CATALOG) == f"acme|{keys.key_shard('acme', 'e:e1', 4)}"
    assert hub_key(november.model_copy(update={"event_id": None, "idempotency_key": None}), 4, CATALOG) == "acme"
    # A distinct value goes where it is applied, so the shard it changes has one writer.
    ann = [event(i, "users.active", user_id="ann") for i in range(40)]
    assert {hub_key(e, 4, CATALOG) for e in ann} == {f"acme|{value_shard(users, 'ann', 4)}"}
    history = (ShardChange(1, None), ShardChange(4, DEC))
    key_of = by_shard(TenantSchedule(lambda _t: DEFAULT_HISTORY, lambda _t: history), CATALOG)
    december = november.model_copy(update={"timestamp": DEC + timedelta(hours=1)})
    assert key_of(november) == "acme"
    assert key_of(december) == hub_key(december, 4, CATALOG)
    assert {key_of(event(i, "api.requests", timestamp=DEC)) for i in range(40)} == {f"acme|{s}" for s in range(4)}


def cell(value: str, count: int = 1, at: tuple[str, str] | None = None) -> Cell:
    return Cell(Decimal(value), count, at)


def test_shards_combine_by_kind():
    assert set(ACROSS) == set(Aggregation)
    parts = [cell("2", 1, ("2026-11-24T10", "b")), None, cell("5", 2, ("2026-11-24T09", "z")), cell("-1", 3, None)]
    assert combine_shards(Aggregation.SUM, parts) == cell("6", 6)
    assert combine_shards(Aggregation.COUNT, parts) == cell("6", 6)
    assert combine_shards(Aggregation.UNIQUE_COUNT, parts) == cell("6", 6)  # each value in one shard: they add
    assert combine_shards(Aggregation.MAX, parts) == cell("5", 6)
    assert combine_shards(Aggregation.MIN, parts) == cell("-1", 6)
    latest = [cell("2", 1, ("2026-11-24T10:00:00Z", "b")), cell("5", 2, ("2026-11-24T10:00:00Z", "a"))]
    assert combine_shards(Aggregation.LATEST, latest) == cell("2", 3, ("2026-11-24T10:00:00Z", "b"))
    assert combine_shards(Aggregation.SUM, [None, None]) is None


def state(totals: dict[str, list[object]], status: str = "open", **extra: object) -> StateRow:
    return StateRow(
        {
            "tenant": "acme",
            "period": ["2026-11-01T00:00:00+00:00", "2026-12-01T00:00:00+00:00"],
            "status": status,
            "totals": totals,
            "wm": {},
            "updated": extra.pop("updated", "2026-11-24T10:00:00.000000Z"),
            **extra,
        }
    )


def test_a_period_state_combines_its_shards_and_is_closed_only_when_all_are():
    shards = [
        state({"storage.gb": ["3", 1], "api.requests": ["1.5", 1]}, kinds={"storage.gb": "max"}),
        None,
        state({"storage.gb": ["7", 2]}, updated="2026-11-24T11:00:00.000000Z", kinds={"storage.gb": "max"}),
    ]
    combined = period_state(shards, CATALOG)
    assert combined is not None
    assert combined.totals() == {"storage.gb": cell("7", 3), "api.requests": cell("1.5", 1)}
    assert (combined.is_closed, combined.updated) == (False, datetime(2026, 11, 24, 11, tzinfo=UTC))
    assert not all_closed(shards)
    closed = [
        state(t.data["totals"], "closed", closed_at=f"2026-12-01T0{i}:00:00.000000Z", catalog="v1")
        for i, t in enumerate(s for s in shards if s is not None)
    ]
    combined = period_state(closed, CATALOG)
    assert combined is not None
    assert combined.is_closed
    assert all_closed(closed)
    assert combined.closed_at == datetime(2026, 12, 1, 1, tzinfo=UTC)
    assert period_state([None, None], CATALOG) is None
    one = state({"api.requests": ["1", 1]})
    assert period_state([one], CATALOG) is one
