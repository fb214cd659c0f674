"""The operator's actions, through their HTTP handlers, on every store (conftest `store`): a late event applied
to the open period counts exactly once however often it is applied, and is journaled with the totals before and
after; a discarded one counts nothing; the two exclude each other; a dead letter re-driven once its cause is fixed
counts once, and one whose cause remains is refused with nothing written; the journal lists every action with
its actor."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from metering.billing.journal import JournalKind
from metering.core.hub import hub_partition
from metering.core.meters import MeterCatalog, load_catalog
from metering.ingest.consumer import HubMessage, consume
from metering.settings import LateEventPolicy
from metering.stores import Replace
from metering.tenants.records import LimitPair, TenantUpdate
from tests.integration.test_billing import NOW, Pipeline, build, event

pytestmark = pytest.mark.store

PARTITION = hub_partition("evhns-metering", "usage-events", "0")
OPERATOR = {"X-MS-CLIENT-PRINCIPAL-NAME": "ops@example.com"}


@pytest.fixture
def pipe(store, azurite) -> Pipeline:
    return build(store, azurite, LateEventPolicy.REVIEW)


def late_ids(pipe: Pipeline, status: str | None = None) -> dict[str, str]:
    params = {"tenant_id": "acme", **({"status": status} if status else {})}
    response = pipe.services.http.operations.late_events(params)
    assert response.status == 200, response.body
    return {item["event"]["event_id"]: item["id"] for item in response.json()["items"]}


def with_late_events(pipe: Pipeline) -> dict[str, str]:
    pipe.apply([event(1)])  # October: 1.5
    pipe.closer.run()
    pipe.apply([event("n1", at=NOW - timedelta(hours=2), quantity="10")], start=5)  # November: 10
    pipe.apply(
        [event("late-a", quantity="2.25"), event("late-b", quantity="3"), event("level", metric="storage.gb_peak")],
        start=10,
    )
    return late_ids(pipe)


def test_apply_counts_a_late_event_in_the_open_period_once_and_journals_it(pipe):
    ids = with_late_events(pipe)
    operations = pipe.services.http.operations
    first = operations.late_apply("acme", ids["elate-a"], OPERATOR)
    assert first.status == 200, first.body
    body = first.json()
    assert body["late_event"]["status"] == "applied"
    assert body["late_event"]["applied_to"] == "2026-11-01"
    assert body["late_event"]["resolved_by"] == "ops@example.com"
    assert (body["journal"]["before"], body["journal"]["after"]) == ({"api.requests": "10"}, {"api.requests": "12.25"})
    assert pipe.total("acme", "api.requests", NOW) == ("12.25", 2, "open")
    # A second click, and a redelivery of the event itself, change nothing.
    again = operations.late_apply("acme", ids["elate-a"], OPERATOR)
    assert again.status == 200
    assert again.json()["repeated"] is True
    pipe.apply([event("late-a", quantity="2.25")], start=40)
    assert pipe.total("acme", "api.requests", NOW) == ("12.25", 2, "open")
    assert pipe.total("acme", "api.requests") == ("1.5", 1, "closed")  # the closed period is untouched
    entries = pipe.services.journal.list("acme")
    assert [(e.kind, e.actor, e.subject) for e in entries] == [(JournalKind.LATE_APPLY, "ops@example.com", "e:elate-a")]
    # Once applied, it cannot be discarded.
    refused = operations.late_discard("acme", ids["elate-a"], json.dumps({"reason": "x"}).encode(), OPERATOR)
    assert refused.status == 409
    assert "applied by ops@example.com" in refused.json()["detail"]
    # The November statement shows it as an adjustment.
    pipe.clock.now = NOW.replace(month=12, day=2)
    pipe.closer.run()
    statement = pipe.statement("acme", "2026-11-01")
    assert statement is not None
    assert [(line.kind.value, str(line.quantity)) for line in statement.lines] == [
        ("usage", "10"),
        ("adjustment", "2.25"),
    ]


def test_discard_counts_nothing_journals_the_reason_and_excludes_apply(pipe):
    ids = with_late_events(pipe)
    operations = pipe.services.http.operations
    reason = json.dumps({"reason": "test traffic from the staging tenant"}).encode()
    response = operations.late_discard("acme", ids["elate-b"], reason, OPERATOR)
    assert response.status == 200, response.body
    assert response.json()["late_event"]["status"] == "discarded"
    again = operations.late_discard("acme", ids["elate-b"], reason, OPERATOR)
    assert again.json()["repeated"] is True
    assert pipe.total("acme", "api.requests", NOW) == ("10", 1, "open")
    assert operations.late_apply("acme", ids["elate-b"], OPERATOR).status == 409
    assert pipe.total("acme", "api.requests", NOW) == ("10", 1, "open")
    [entry] = pipe.services.journal.list("acme")
    assert (entry.kind, entry.details["reason"]) == (JournalKind.LATE_DISCARD, "test traffic from the staging tenant")
    assert entry.before == entry.after == {"api.requests": "1.5"}
    assert late_ids(pipe, "discarded") == {"elate-b": ids["elate-b"]}
    assert set(late_ids(pipe, "waiting")) == {"elate-a", "elevel"}


def test_actions_refuse_what_they_cannot_do_and_bad_input_with_nothing_written(pipe):
    ids = with_late_events(pipe)
    operations = pipe.services.http.operations
    level = operations.late_apply("acme", ids["elevel"], OPERATOR)
    assert level.status == 409
    assert "storage.gb_peak is a max meter" in level.json()["detail"]
    assert operations.late_apply("acme", "0" * 32, OPERATOR).status == 404
    assert operations.late_apply("acme", "not-an-id", OPERATOR).status == 400
    assert operations.late_apply("bad tenant", ids["elate-a"], OPERATOR).status == 400
    for body in (b"{}", b'{"reason": ""}', b'{"reason": "ok", "extra": 1}', b"[]", b"not json"):
        refused = operations.late_discard("acme", ids["elate-a"], body, OPERATOR)
        assert refused.status == 400, body
        assert refused.content_type == "application/problem+json"
    assert operations.journal_list({}).status == 400
    assert operations.journal_list({"tenant_id": "acme", "since": "yesterday"}).status == 400
    assert pipe.services.journal.list("acme") == []
    assert set(late_ids(pipe, "waiting")) == {"elate-a", "elate-b", "elevel"}
    # Without App Service Authentication's header, the admin key is the actor.
    response = operations.late_apply("acme", ids["elate-a"], {})
    assert response.json()["late_event"]["resolved_by"] == "admin key"


def _without(catalog: MeterCatalog, metric: str) -> MeterCatalog:
    return MeterCatalog(
        version=catalog.version, meters={name: m for name, m in catalog.meters.items() if name != metric}
    )


def test_a_dead_letter_redriven_once_its_cause_is_fixed_counts_once(store, azurite):
    full = load_catalog()
    # The aggregator ran with a catalog that did not have seats.licensed yet: its events were dead-lettered.
    before = build(store, azurite, LateEventPolicy.REVIEW, catalog=_without(full, "seats.licensed"))
    at = NOW - timedelta(hours=1)
    body: list[dict[str, Any]] = [
        {
            "tenant_id": "acme",
            "metric": "seats.licensed",
            "quantity": "42",
            "timestamp": at.isoformat(),
            "source": "gw",
        },
        {
            "event_id": "ok-1",
            "source": "gw",
            "tenant_id": "acme",
            "metric": "api.requests",
            "quantity": "1",
            "timestamp": at.isoformat(),
        },
    ]
    messages = [HubMessage(json.dumps(body).encode(), PARTITION, 7, at)]
    services = before.services
    consume(messages, services.ledger, services.dead_letters, services.clock, services.after_apply)
    listed = services.http.operations.dead_letter_list({}).json()["items"]
    assert len(listed) == 1, [item["reason"] for item in listed]
    [letter] = listed
    assert "metric is not a meter of the catalog" in letter["reason"]
    still = services.http.operations.dead_letter_redrive(letter["id"], OPERATOR)
    assert still.status == 409, still.body
    assert "meter is not in the catalog" in still.json()["detail"]
    assert services.journal.list("acme") == []

    after = build(store, azurite, LateEventPolicy.REVIEW)  # the catalog fixed
    after.clock.now = before.clock.now
    operations = after.services.http.operations
    response = operations.dead_letter_redrive(letter["id"], OPERATOR)
    assert response.status == 200, response.body
    outcome = response.json()
    assert (outcome["outcome"], outcome["events"], outcome["redriven_by"]) == ("counted", 1, "ops@example.com")
    assert after.total("acme", "seats.licensed", NOW) == ("42", 1, "open")
    # The id it was given is the one the aggregator derives from its hub position: a redelivery of the same
    # message through the fixed aggregator finds it counted.
    consume(messages, after.ledger, after.services.dead_letters, after.clock, after.services.after_apply)
    assert after.total("acme", "seats.licensed", NOW) == ("42", 1, "open")
    again = operations.dead_letter_redrive(letter["id"], OPERATOR)
    assert again.json()["repeated"] is True
    assert after.total("acme", "seats.licensed", NOW) == ("42", 1, "open")
    [entry] = after.services.journal.list("acme")
    assert (entry.kind, entry.subject, entry.actor) == (
        JournalKind.DEAD_LETTER_REDRIVE,
        f"e:eh:{PARTITION}:7:0",
        "ops@example.com",
    )
    assert (entry.before, entry.after) == ({"seats.licensed@2026-11-01": "0"}, {"seats.licensed@2026-11-01": "42"})
    waiting = operations.dead_letter_list({"status": "waiting"}).json()["items"]
    assert waiting == []
    assert operations.dead_letter_redrive("AAAA", OPERATOR).status == 404
    assert operations.dead_letter_redrive("../x", OPERATOR).status == 400


def test_alerts_sent_and_tenants_standing_are_listed_for_the_console(pipe):
    pipe.directory.update("acme", TenantUpdate(limits={"api.requests": LimitPair(soft=Decimal(5), hard=Decimal(10))}))
    at = NOW - timedelta(hours=1)
    pipe.apply([event(i, at=at, quantity="3") for i in range(3)], start=100)  # 9 of 10: the 80% alert
    alerts = pipe.services.http.operations.alert_list({"tenant_id": "acme"}).json()
    assert [(a["metric"], a["threshold_percent"], a["usage"], a["hard_limit"]) for a in alerts["items"]] == [
        ("api.requests", "80", "9", "10")
    ]
    assert pipe.services.http.operations.alert_list({"tenant_id": "other"}).json()["items"] == []
    pipe.apply([event("o1", tenant="globex", at=at, quantity="1")], start=200)
    standing = pipe.services.http.console.tenants({"sort": "state"}).json()
    assert [(t["tenant_id"], t["state"]) for t in standing["items"]] == [("acme", "soft"), ("globex", "unlimited")]
    [meter] = standing["items"][0]["meters"]
    assert (meter["metric"], meter["total"], meter["soft"], meter["hard"]) == ("api.requests", "9", "5", "10")
    found = pipe.services.http.console.tenants({"q": "GLOB"}).json()["items"]
    assert [t["tenant_id"] for t in found] == ["globex"]
    assert pipe.services.http.console.tenants({"limit": "0"}).status == 400


def test_an_apply_whose_period_closed_before_it_counted_gives_its_claim_back(pipe):
    ids = with_late_events(pipe)
    operations = pipe.services.http.operations
    # A click claimed November and stopped before counting (the claim as it leaves it in the record) ...
    table = pipe.store.late_events
    row = table.read("acme", [ids["elate-a"]])[ids["elate-a"]]
    claimed = {**row.data, "status": "applying", "resolved_at": "2026-11-24T12:00:00.000000Z"}
    claimed |= {"resolved_by": "ops@example.com", "applied_to": "2026-11-01"}
    table.commit("acme", [Replace(row.key, claimed, row.etag)])
    # ... then November closed.
    pipe.clock.now = NOW.replace(month=12, day=2)
    pipe.closer.run()
    refused = operations.late_apply("acme", ids["elate-a"], OPERATOR)
    assert refused.status == 409
    assert "closed while the event was being applied" in refused.json()["detail"]
    assert pipe.total("acme", "api.requests", NOW) == ("10", 1, "closed")  # nothing counted in November
    assert set(late_ids(pipe, "waiting")) >= {"elate-a"}  # the claim was given back
    applied = operations.late_apply("acme", ids["elate-a"], OPERATOR)
    assert applied.status == 200, applied.body
    assert applied.json()["late_event"]["applied_to"] == "2026-12-01"
    assert pipe.total("acme", "api.requests", pipe.clock.now) == ("2.25", 1, "open")
