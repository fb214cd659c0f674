"""A tenant's plan over time: which plan a period ending at an instant is rated with, and how changes and
backdated changes rewrite the history (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from metering.tenants.plan_history import (
    MAX_CHANGES,
    PlanChange,
    change_plan,
    history_from_json,
    history_json,
    plan_before,
)

T0 = datetime(2026, 10, 15, tzinfo=UTC)
NOV = datetime(2026, 11, 1, tzinfo=UTC)


def test_a_period_is_rated_with_the_plan_chosen_last_before_its_end():
    history = change_plan((), "pro", T0)
    assert plan_before(history, T0) is None  # a change at the very end belongs to the next period
    assert plan_before(history, T0 + timedelta(microseconds=1)) == "pro"
    history = change_plan(history, "enterprise", NOV)
    assert [plan_before(history, at) for at in (T0, NOV, NOV + timedelta(days=30))] == [None, "pro", "enterprise"]


def test_a_change_to_the_plan_in_force_is_no_change_and_a_backdated_one_replaces_what_follows():
    history = change_plan(change_plan((), "free", T0), "pro", NOV)
    assert change_plan(history, "pro", NOV + timedelta(days=1)) == history
    backdated = change_plan(history, "enterprise", T0 + timedelta(days=1))
    assert backdated == (PlanChange("free", T0), PlanChange("enterprise", T0 + timedelta(days=1)))
    assert change_plan(history, "free", T0 + timedelta(days=1)) == (PlanChange("free", T0),)


def test_the_history_is_bounded_and_round_trips():
    history = ()
    days = MAX_CHANGES + 10
    for day in range(days):
        history = change_plan(history, "pro" if day % 2 else "free", T0 + timedelta(days=day))
    assert len(history) == MAX_CHANGES
    assert history[0].effective_from is None  # the oldest kept is taken as in force since always
    assert history[-1] == PlanChange("pro" if (days - 1) % 2 else "free", T0 + timedelta(days=days - 1))
    assert history_from_json(history_json(history), "ignored") == history


def test_settings_written_before_plan_changes_were_recorded():
    assert history_from_json(None, "pro") == (PlanChange("pro", None),)
    assert history_from_json(None, None) == ()
