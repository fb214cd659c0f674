"""The Table storage adapter against real Azurite: what the ledger relies on from a store."""

from __future__ import annotations

import time

import pytest
from azure.core.exceptions import AzureError

from metering.devhost.azurite import Azurite
from metering.stores import CommitConflict, Create, Replace
from metering.stores.table import TableStore

pytestmark = pytest.mark.store


def test_commit_returns_an_etag_per_operation_and_reads_them_back(table_store):
    etags = table_store.usage.commit("p", [Create("a", {"n": 1}), Create("b", {"n": 2})])
    rows = table_store.usage.read("p", ["a", "b", "missing"])
    assert sorted(rows) == ["a", "b"]
    assert [rows["a"].etag, rows["b"].etag] == etags
    assert rows["b"].data == {"n": 2}


def test_a_create_of_an_existing_row_fails_the_whole_commit(table_store):
    table_store.usage.commit("p", [Create("a", {"n": 1})])
    with pytest.raises(CommitConflict) as raised:
        table_store.usage.commit("p", [Create("new", {"n": 9}), Create("a", {"n": 2})])
    assert raised.value.index == 1
    # Atomic: the first operation did not happen either, and the existing row is untouched.
    assert table_store.usage.read("p", ["new", "a"])["a"].data == {"n": 1}
    assert "new" not in table_store.usage.read("p", ["new"])


def test_a_replace_under_a_stale_etag_fails_the_whole_commit(table_store):
    [etag] = table_store.usage.commit("p", [Create("a", {"n": 1})])
    [newer] = table_store.usage.commit("p", [Replace("a", {"n": 2}, etag)])
    with pytest.raises(CommitConflict):
        table_store.usage.commit("p", [Create("b", {}), Replace("a", {"n": 3}, etag)])
    row = table_store.usage.read("p", ["a"])["a"]
    assert (row.data, row.etag) == ({"n": 2}, newer)
    assert table_store.usage.read("p", ["b"]) == {}


def test_large_rows_span_several_properties(table_store):
    # Over the 32,000 characters one string property holds, with text that JSON escapes.
    data = {"text": "é\"'" * 30_000, "nested": {"k": list(range(1000))}}
    table_store.usage.commit("p", [Create("big", data)])
    assert table_store.usage.read("p", ["big"])["big"].data == data


def test_keys_with_quotes_are_escaped_in_queries(table_store):
    table_store.usage.commit("it's", [Create("o'k", {"v": 1})])
    assert table_store.usage.read("it's", ["o'k"])["o'k"].data == {"v": 1}
    assert [r.key for r in table_store.usage.range("it's", "o", "p")] == ["o'k"]


def test_reads_of_many_keys_span_several_queries(table_store):
    keys = [f"k{i:03d}" for i in range(40)]
    for i in range(0, 40, 20):
        table_store.usage.commit("p", [Create(k, {"k": k}) for k in keys[i : i + 20]])
    assert sorted(table_store.usage.read("p", [*keys, "nope"])) == keys


def test_range_is_ordered_bounded_and_limited(table_store):
    table_store.usage.commit("p", [Create(k, {}) for k in ["d|2", "d|1", "m|x", "s", "d|3"]])
    table_store.usage.commit("other", [Create("d|1", {})])
    assert [r.key for r in table_store.usage.range("p", "d|", "d|~")] == ["d|1", "d|2", "d|3"]
    assert [r.key for r in table_store.usage.range("p", "d|", "d|~", limit=2)] == ["d|1", "d|2"]


def test_upsert_overwrites(table_store):
    table_store.conflicts.upsert("t", "k", {"v": 1})
    table_store.conflicts.upsert("t", "k", {"v": 2})
    assert [r.data for r in table_store.conflicts.partition("t")] == [{"v": 2}]


def test_an_outage_raises_after_the_sdk_retries(tmp_path):
    # The caller (the Event Hub trigger) must see the failure and retry the batch: never a silent success.
    azurite = Azurite(tmp_path / "azurite").start()
    store = TableStore.from_connection_string(azurite.connection_string, usage_table="usage", conflicts_table="conf")
    store.ensure_ready()
    azurite.stop()
    started = time.monotonic()
    with pytest.raises(AzureError):
        store.usage.commit("p", [Create("a", {})])
    assert time.monotonic() - started < 60
