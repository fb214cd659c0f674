"""What every store must do for the ledger, the readers and the closer: run on each store the project ships.

`store` is the Table store on Azurite, the Cosmos store on the local Cosmos server (non-atomic commits) and the
memory store; `atomic_store` is the Table and the memory store, and the Cosmos store on a real Cosmos DB when
COSMOS_TEST_ENDPOINT and COSMOS_TEST_KEY are set.
Only cases that hold without atomic commits use `store`.
"""

from __future__ import annotations

import threading
import uuid

import pytest

from metering.connections import build_store
from metering.devhost.cosmos import LOCAL_KEY
from metering.settings import Settings
from metering.stores import CommitConflict, Create, Replace
from metering.stores.cosmos import CosmosStore, CosmosStoreError

pytestmark = pytest.mark.store


def test_missing_keys_are_absent_and_etags_are_returned_per_operation(store):
    etags = store.usage.commit("p", [Create("a", {"n": 1}), Create("b|x", {"n": 2})])
    rows = store.usage.read("p", ["a", "b|x", "missing"])
    assert sorted(rows) == ["a", "b|x"]
    assert [rows["a"].etag, rows["b|x"].etag] == etags
    assert rows["b|x"].data == {"n": 2}
    assert store.usage.read("p", []) == {}
    assert store.usage.read("other", ["a"]) == {}


def test_a_create_of_an_existing_row_is_a_conflict_and_writes_nothing(store):
    store.usage.commit("p", [Create("a", {"n": 1})])
    with pytest.raises(CommitConflict) as raised:
        store.usage.commit("p", [Create("new", {"n": 9}), Create("a", {"n": 2})])
    assert raised.value.index == 1
    assert store.usage.read("p", ["a"])["a"].data == {"n": 1}
    assert store.usage.read("p", ["new"]) == {}


def test_a_stale_etag_is_a_conflict_and_writes_nothing(store):
    [etag] = store.usage.commit("p", [Create("a", {"n": 1})])
    [newer] = store.usage.commit("p", [Replace("a", {"n": 2}, etag)])
    assert newer != etag
    with pytest.raises(CommitConflict) as raised:
        store.usage.commit("p", [Create("b", {}), Replace("a", {"n": 3}, etag)])
    assert raised.value.index == 1
    row = store.usage.read("p", ["a"])["a"]
    assert (row.data, row.etag) == ({"n": 2}, newer)
    assert store.usage.read("p", ["b"]) == {}


def test_a_replace_of_a_missing_row_is_a_conflict(store):
    [etag] = store.usage.commit("p", [Create("a", {})])
    store.usage.delete("p", ["a"])
    with pytest.raises(CommitConflict):
        store.usage.commit("p", [Replace("a", {"n": 1}, etag)])
    assert store.usage.read("p", ["a"]) == {}


def test_partitions_are_separate(store):
    store.usage.commit("p", [Create("a", {"in": "p"})])
    store.usage.commit("q", [Create("a", {"in": "q"})])
    assert store.usage.read("q", ["a"])["a"].data == {"in": "q"}
    assert [r.data for r in store.usage.partition("p")] == [{"in": "p"}]


def test_range_is_ordered_bounded_and_limited(store):
    store.usage.commit("p", [Create(k, {}) for k in ["d|2", "d|1", "m|x", "s", "d|3", "d|10"]])
    store.usage.commit("other", [Create("d|1", {})])
    assert [r.key for r in store.usage.range("p", "d|", "d|~")] == ["d|1", "d|10", "d|2", "d|3"]
    assert [r.key for r in store.usage.range("p", "d|", "d|~", limit=2)] == ["d|1", "d|10"]
    assert [r.key for r in store.usage.range("p", "d|2", "d|3")] == ["d|2"]
    assert store.usage.range("p", "x", "y") == []


def test_reads_of_many_keys_span_several_queries(store):
    keys = [f"k{i:03d}" for i in range(150)]
    for i in range(0, 150, 50):
        store.usage.commit("p", [Create(k, {"k": k}) for k in keys[i : i + 50]])
    assert sorted(store.usage.read("p", [*keys, "nope"])) == keys
    assert len(store.usage.partition("p")) == 150


def test_a_full_transaction_commits(store):
    etags = store.usage.commit("p", [Create(f"m|{i:03d}", {"i": i}) for i in range(100)])
    assert len(etags) == 100
    assert len(store.usage.range("p", "m|", "m|~")) == 100


def test_data_round_trips_exactly(store):
    data = {
        "total": "12345678901234567890.000000000000000001",
        "text": "naïve — 東京 🚀 \"quoted\" 'single' \\ back",
        "nested": {"list": [1, 2.5, None, True, "x"], "empty": {}},
        # Longer than one property of a Table entity holds, well within the entity's 1 MiB.
        "big": "é\"'" * 50_000,
    }
    store.usage.commit("p", [Create("row", data)])
    assert store.usage.read("p", ["row"])["row"].data == data
    store.tenants.upsert("t", "row", data)
    assert store.tenants.partition("t")[0].data == data


def test_upsert_overwrites_and_changes_the_etag(store):
    store.conflicts.upsert("t", "k", {"v": 1})
    before = store.conflicts.read("t", ["k"])["k"].etag
    store.conflicts.upsert("t", "k", {"v": 2})
    [row] = store.conflicts.partition("t")
    assert (row.data, row.etag != before) == ({"v": 2}, True)


def test_delete_is_idempotent_and_spans_several_groups(store):
    keys = [f"m|{i:03d}" for i in range(120)]
    store.usage.commit("p", [Create(k, {}) for k in keys[:100]])
    store.usage.commit("p", [Create(k, {}) for k in keys[100:]] + [Create("s", {})])
    store.usage.delete("p", [*keys, "never-there"])
    store.usage.delete("p", keys[:3])
    assert [r.key for r in store.usage.partition("p")] == ["s"]


def test_every_table_is_its_own(store):
    tables = [store.usage, store.conflicts, store.dead_letters, store.tenants, store.statements]
    tables += [store.late_events, store.control, store.journal, store.exports]
    assert len({table.name for table in tables}) == 9
    for i, table in enumerate(tables):
        table.upsert("p", "k", {"table": i})
    assert [table.read("p", ["k"])["k"].data for table in tables] == [{"table": i} for i in range(9)]


def test_concurrent_writers_of_one_row_one_wins(atomic_store):
    # Two writers replace the same row under the same ETag, with other rows in each commit: exactly one
    # commit happens, whole, and the other writes nothing.
    [etag] = atomic_store.usage.commit("p", [Create("state", {"n": 0})])
    outcomes: list[str] = []

    def write(name: str) -> None:
        try:
            atomic_store.usage.commit("p", [Create(f"m|{name}", {}), Replace("state", {"n": name}, etag)])
            outcomes.append(name)
        except CommitConflict:
            pass

    threads = [threading.Thread(target=write, args=(name,)) for name in ("a", "b", "c", "d")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    [winner] = outcomes
    assert atomic_store.usage.read("p", ["state"])["state"].data == {"n": winner}
    assert [r.key for r in atomic_store.usage.range("p", "m|", "m|~")] == [f"m|{winner}"]


def test_the_non_atomic_path_is_refused_off_loopback():
    with pytest.raises(CosmosStoreError, match="not on loopback"):
        CosmosStore.from_key("https://metering.documents.azure.com:443/", LOCAL_KEY, "m", non_atomic_local=True)


def test_the_setting_chooses_the_store_and_identity_only_checks_what_exists(cosmos_server, monkeypatch):
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    monkeypatch.setenv("METERING_STORE", "cosmos")
    monkeypatch.setenv("COSMOS__accountEndpoint", cosmos_server.endpoint)
    monkeypatch.setenv("COSMOS_KEY", cosmos_server.key)
    monkeypatch.setenv("COSMOS_NON_ATOMIC_LOCAL", "true")
    monkeypatch.setenv("COSMOS_DATABASE", f"t{uuid.uuid4().hex}")
    store = build_store(Settings())  # type: ignore[call-arg]
    assert isinstance(store, CosmosStore)
    # Without the right to create (identity-based access), a missing database is named, not created.
    store._can_create = False
    with pytest.raises(CosmosStoreError, match="does not exist"):
        store.ensure_ready()
    store._can_create = True
    store.ensure_ready()
    store.usage.upsert("p", "k", {"v": "1"})
    assert store.usage.read("p", ["k"])["k"].data == {"v": "1"}
    store.drop()
    store.close()


def test_a_table_counts_its_rows_across_partitions_up_to_a_limit(store):
    assert store.dead_letters.count() == 0
    for partition in ("a", "b|1", "c"):
        store.dead_letters.commit(partition, [Create(f"k{i}", {"i": i}) for i in range(40)])
    store.dead_letters.upsert("d", "k", {})
    store.late_events.upsert("a", "k0", {})  # another table's rows are not counted
    assert store.dead_letters.count() == 121
    assert store.dead_letters.count(limit=50) == 50
    assert store.dead_letters.count(limit=500) == 121
    store.dead_letters.delete("b|1", [f"k{i}" for i in range(40)])
    assert store.dead_letters.count() == 81


def test_a_table_counts_the_rows_a_predicate_holds_for_up_to_a_limit_of_rows_read(store):
    for partition in ("a", "b|1"):
        store.dead_letters.commit(partition, [Create(f"k{i}", {"i": i, "done": i % 3 == 0}) for i in range(30)])
    store.late_events.upsert("a", "k1", {"done": False})  # another table's rows are not counted
    assert store.dead_letters.count_where(lambda row: not row.data["done"]) == 40
    assert store.dead_letters.count_where(lambda row: row.data["done"]) == 20
    assert store.dead_letters.count_where(lambda row: True, limit=25) == 25
    assert store.dead_letters.count_where(lambda row: row.key == "k1", limit=60) == 2


def test_a_table_scans_its_rows_across_partitions_with_their_partition(store):
    for partition in ("a", "b|1"):
        store.dead_letters.commit(partition, [Create(f"k{i}", {"p": partition, "i": i}) for i in range(3)])
    store.late_events.upsert("a", "other", {})  # another table's rows are not scanned
    scanned = store.dead_letters.scan()
    assert sorted((partition, row.key, row.data["p"], row.data["i"]) for partition, row in scanned) == sorted(
        (p, f"k{i}", p, i) for p in ("a", "b|1") for i in range(3)
    )
    assert all(row.etag for _, row in scanned)
    assert len(store.dead_letters.scan(limit=4)) == 4


def test_the_app_refuses_the_non_atomic_path_off_loopback_before_any_request():
    settings = Settings(  # type: ignore[call-arg]
        storage_connection="UseDevelopmentStorage=true",
        store="cosmos",
        cosmos_endpoint="https://metering.documents.azure.com:443/",
        cosmos_key=LOCAL_KEY,
        cosmos_non_atomic_local=True,
    )
    with pytest.raises(CosmosStoreError, match="not on loopback"):
        build_store(settings)
