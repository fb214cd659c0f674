/* The operator console. The admin key lives in this closure only (never storage, a cookie or a URL) and goes in
   the x-functions-key header of each admin route. Every value from a response is shown as text (MeteringUI.h). */
(function () {
  "use strict";

  const { h, fill, decimal } = window.MeteringUI;
  const $ = (id) => document.getElementById(id);
  let key = null;

  class Refused extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  async function call(method, path, { params, body } = {}) {
    const url = new URL("/api/" + path, window.location.origin);
    for (const [name, value] of Object.entries(params || {})) {
      if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
    }
    const response = await fetch(url, {
      method,
      headers: { "x-functions-key": key, "content-type": "application/json", accept: "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Refused(response.status, data.detail || response.statusText);
    return data;
  }

  function notice(text, bad) {
    const box = $("notice");
    box.hidden = !text;
    box.className = "notice" + (bad ? " notice--bad" : "");
    fill(box, text || "");
  }

  function table(columns, rows, empty) {
    if (!rows.length) return h("p", { class: "empty" }, empty);
    return h(
      "table",
      { class: "table" },
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.num ? "num" : null }, c.label)))),
      h("tbody", {}, rows),
    );
  }

  function when(text) {
    if (!text) return "";
    const date = new Date(text);
    return Number.isNaN(date.getTime()) ? String(text) : date.toISOString().replace("T", " ").slice(0, 19) + " UTC";
  }

  function chip(state) {
    const kind = { hard: "bad", soft: "warn", ok: "ok" }[state];
    return h("span", { class: "chip" + (kind ? " chip--" + kind : "") }, state);
  }

  function totals(map) {
    return Object.entries(map || {}).map(([name, value]) => name + " " + decimal(value)).join(", ");
  }

  /** A button that runs `action` once at a time, then refreshes what it changed. */
  function actionButton(label, action, testId) {
    const button = h("button", { class: "button", type: "button", "data-action": testId }, label);
    button.addEventListener("click", async () => {
      if (button.disabled) return;
      button.disabled = true;
      try {
        const message = await action();
        notice(message, false);
      } catch (error) {
        notice(error.message, true);
      } finally {
        button.disabled = false;
        await refresh();
      }
    });
    return button;
  }

  // -- lists ------------------------------------------------------------------------------------------------

  function counted(n, noun) {
    return `${n} ${noun}${n === 1 ? "" : "s"}`;
  }

  async function showHealth() {
    const health = await call("GET", "manage/health");
    fill(
      $("health-note"),
      "waiting for an operator: " +
        [
          counted(health.dead_letters, "dead letter"),
          counted(health.late_events, "late event"),
          counted(health.conflicts, "conflict"),
          counted(health.webhooks_failed, "failed webhook"),
        ].join(" · "),
    );
    const rows = health.partitions.map((p) =>
      h(
        "tr",
        { "data-partition": p.partition },
        h("td", { class: "mono" }, p.partition),
        h("td", { class: "num" }, p.applied_sequence === null ? "none yet" : String(p.applied_sequence)),
        h("td", {}, p.applied_at === null ? "never" : when(p.applied_at)),
        h("td", { class: "num" }, decimal(p.lag_seconds) + " s"),
      ),
    );
    fill(
      $("health-body"),
      table(
        [{ label: "Partition" }, { label: "Applied sequence", num: true }, { label: "Applied at" }, { label: "Lag", num: true }],
        rows,
        "No hub partition has been applied yet.",
      ),
    );
  }

  async function showTenants() {
    const page = await call("GET", "manage/console/tenants", {
      params: { q: $("tenant-search").value, sort: $("tenant-sort").value, limit: 100 },
    });
    const rows = page.items.map((t) =>
      h(
        "tr",
        { "data-tenant": t.tenant_id },
        h("td", { class: "mono" }, t.tenant_id),
        h("td", {}, chip(t.state)),
        h(
          "td",
          {},
          t.meters.map((m) =>
            h(
              "div",
              { "data-metric": m.metric },
              m.metric + ": " + decimal(m.total),
              m.hard !== null || m.soft !== null
                ? " (" + [["soft", m.soft], ["hard", m.hard]].filter(([, v]) => v !== null).map(([n, v]) => n + " " + decimal(v)).join(", ") + ")"
                : "",
              " ",
              chip(m.state),
            ),
          ),
        ),
        h("td", {}, when(t.period_start).slice(0, 10)),
      ),
    );
    fill(
      $("tenants-body"),
      table([{ label: "Tenant" }, { label: "State" }, { label: "Meters this period (limits)" }, { label: "Period" }], rows, "No tenant has usage this period."),
      page.next_offset !== null ? h("p", { class: "muted small" }, `${page.total} tenants; the first ${page.items.length} shown.`) : null,
    );
  }

  async function showAlerts() {
    const page = await call("GET", "manage/alerts", { params: { limit: 100 } });
    fill($("alerts-note"), `${page.total} sent`);
    const rows = page.items.map((a) =>
      h(
        "tr",
        { "data-alert": a.id },
        h("td", { class: "mono" }, a.tenant_id),
        h("td", {}, a.metric),
        h("td", { class: "num" }, decimal(a.threshold_percent) + " %"),
        h("td", { class: "num" }, decimal(a.usage) + " of " + decimal(a.hard_limit)),
        h("td", {}, when(a.detected)),
      ),
    );
    fill(
      $("alerts-body"),
      table([{ label: "Tenant" }, { label: "Metric" }, { label: "Threshold", num: true }, { label: "Usage of hard limit", num: true }, { label: "Sent" }], rows, "No threshold alert sent."),
    );
  }

  async function showLate() {
    const page = await call("GET", "manage/late-events", { params: { status: "waiting", limit: 100 } });
    fill($("late-note"), `${page.total} waiting`);
    const rows = page.items.map((item) => {
      const reason = h("input", { type: "text", "aria-label": "Reason to discard", "data-reason": item.id });
      reason.placeholder = "reason to discard";
      return h(
        "tr",
        { "data-late": item.id },
        h("td", { class: "mono" }, item.tenant_id),
        h("td", {}, String(item.event.metric)),
        h("td", { class: "num" }, decimal(item.event.quantity)),
        h("td", { class: "mono" }, String(item.event.event_id || item.event.idempotency_key || "")),
        h("td", {}, String(item.period_start)),
        h(
          "td",
          { class: "actions" },
          actionButton(
            "Apply",
            async () => {
              const done = await call("POST", `manage/late-events/${encodeURIComponent(item.tenant_id)}/${item.id}/apply`, { body: {} });
              showJournalOf(item.tenant_id);
              return `Applied to the period starting ${done.late_event.applied_to}: ${totals(done.journal.before)} → ${totals(done.journal.after)}`;
            },
            "apply",
          ),
          reason,
          actionButton(
            "Discard",
            async () => {
              await call("POST", `manage/late-events/${encodeURIComponent(item.tenant_id)}/${item.id}/discard`, {
                body: { reason: reason.value },
              });
              showJournalOf(item.tenant_id);
              return "Discarded: counted nowhere.";
            },
            "discard",
          ),
        ),
      );
    });
    fill(
      $("late-body"),
      table([{ label: "Tenant" }, { label: "Metric" }, { label: "Quantity", num: true }, { label: "Event" }, { label: "Closed period" }, { label: "" }], rows, "No late event waits for review."),
    );
  }

  async function showDeadLetters() {
    const page = await call("GET", "manage/dead-letters", { params: { status: "waiting", limit: 100 } });
    fill($("dead-note"), `${page.total} waiting`);
    const rows = page.items.map((letter) =>
      h(
        "tr",
        { "data-dead": letter.id },
        h("td", { class: "mono" }, letter.tenant_id || "?"),
        h("td", {}, when(letter.recorded)),
        h("td", { class: "reason" }, letter.reason || ""),
        h("td", { class: "mono reason" }, letter.body.length > 160 ? letter.body.slice(0, 160) + "…" : letter.body),
        h(
          "td",
          { class: "actions" },
          actionButton(
            "Re-drive",
            async () => {
              const done = await call("POST", `manage/dead-letters/${letter.id}/redrive`, { body: {} });
              if (letter.tenant_id) showJournalOf(letter.tenant_id);
              return `Re-driven: ${done.outcome} (${counted(done.events, "event")}).`;
            },
            "redrive",
          ),
        ),
      ),
    );
    fill(
      $("dead-body"),
      table([{ label: "Tenant" }, { label: "Recorded" }, { label: "Reason" }, { label: "Body" }, { label: "" }], rows, "No dead letter waits."),
    );
  }

  async function showConflicts() {
    const page = await call("GET", "manage/conflicts", { params: { limit: 100 } });
    fill($("conflicts-note"), `${page.total} recorded`);
    const rows = page.items.map((c) =>
      h("tr", {}, h("td", { class: "mono" }, c.tenant_id), h("td", { class: "mono reason" }, JSON.stringify(c.event || c))),
    );
    fill($("conflicts-body"), table([{ label: "Tenant" }, { label: "Payload not counted" }], rows, "No conflict recorded."));
  }

  async function showWebhooks() {
    const page = await call("GET", "manage/webhooks", { params: { status: "failed", limit: 100 } });
    fill($("webhooks-note"), `${page.items.length} failed`);
    const rows = page.items.map((d) =>
      h(
        "tr",
        { "data-webhook": d.id },
        h("td", { class: "mono" }, d.id),
        h("td", {}, d.reason || ""),
        h("td", { class: "reason" }, d.last_error || ""),
        h(
          "td",
          { class: "actions" },
          actionButton("Re-drive", async () => (await call("POST", `manage/webhooks/${encodeURIComponent(d.id)}/redrive`, { body: {} })).detail, "webhook-redrive"),
        ),
      ),
    );
    fill($("webhooks-body"), table([{ label: "Notification" }, { label: "Reason" }, { label: "Last error" }, { label: "" }], rows, "No webhook delivery has failed."));
  }

  async function showExports() {
    const tenant = $("exports-tenant").value.trim();
    if (!tenant) return;
    const report = await call("GET", `manage/exports/${encodeURIComponent(tenant)}`);
    const rows = [];
    for (const target of report.targets) {
      if (!target.linked) {
        rows.push(h("tr", { "data-export": target.target }, h("td", {}, target.target), h("td", { colspan: "6", class: "muted" }, "not linked")));
        continue;
      }
      for (const m of target.metrics) {
        const differs = String(m.difference) !== "0";
        rows.push(
          h(
            "tr",
            { "data-export": target.target + ":" + m.metric },
            h("td", {}, target.target),
            h("td", {}, m.metric + (m.target_metric && m.target_metric !== m.metric ? " → " + m.target_metric : "")),
            h("td", { class: "num" }, decimal(m.ours)),
            h("td", { class: "num" }, decimal(m.acknowledged)),
            h("td", { class: "num" }, decimal(m.pending)),
            h("td", { class: "num" }, differs ? h("span", { class: "chip chip--bad" }, decimal(m.difference)) : "0"),
            h("td", { class: "reason" }, (m.reasons || []).join("; ")),
          ),
        );
      }
    }
    fill(
      $("exports-body"),
      h("p", { class: "muted small" }, `Period from ${when(report.period_start).slice(0, 10)}`),
      table(
        [{ label: "Target" }, { label: "Metric" }, { label: "Ours", num: true }, { label: "Acknowledged", num: true }, { label: "Pending", num: true }, { label: "Difference", num: true }, { label: "Why" }],
        rows,
        "No billing target is configured.",
      ),
    );
  }

  async function showJournalOf(tenant) {
    $("journal-tenant").value = tenant;
    await showJournal();
  }

  async function showJournal() {
    const tenant = $("journal-tenant").value.trim();
    if (!tenant) return;
    const page = await call("GET", "manage/journal", { params: { tenant_id: tenant, limit: 100 } });
    const rows = page.items.map((e) =>
      h(
        "tr",
        { "data-journal": e.kind },
        h("td", {}, when(e.time)),
        h("td", {}, e.kind),
        h("td", {}, e.actor || "pipeline"),
        h("td", { class: "mono reason" }, e.subject),
        h("td", {}, totals(e.before)),
        h("td", {}, totals(e.after)),
      ),
    );
    fill(
      $("journal-body"),
      table([{ label: "Time" }, { label: "Kind" }, { label: "Actor" }, { label: "Subject" }, { label: "Before" }, { label: "After" }], rows, `No journal entry for ${tenant}.`),
    );
  }

  async function refresh() {
    const parts = [showHealth, showTenants, showAlerts, showLate, showDeadLetters, showConflicts, showWebhooks, showExports, showJournal];
    const results = await Promise.allSettled(parts.map((show) => show()));
    const failed = results.find((r) => r.status === "rejected");
    if (failed) {
      if (failed.reason instanceof Refused && failed.reason.status === 401) {
        key = null;
        $("panels").hidden = true;
        $("login").hidden = false;
        notice("The key was refused (401): enter the admin key.", true);
        return;
      }
      notice(failed.reason.message, true);
    }
    document.body.dataset.loaded = String(Date.now());
  }

  $("login").addEventListener("submit", async (event) => {
    event.preventDefault();
    key = $("key").value;
    $("key").value = "";
    $("login").hidden = true;
    $("panels").hidden = false;
    fill($("subtitle"), "The admin key is kept in this tab's memory only; reload the page to forget it.");
    notice("", false);
    await refresh();
  });
  let searchTimer = null;
  $("tenant-search").addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(showTenants, 200);
  });
  $("tenant-sort").addEventListener("change", showTenants);
  $("journal-tenant").addEventListener("change", showJournal);
  $("exports-tenant").addEventListener("change", showExports);
  $("exports-run").addEventListener("click", async () => {
    const button = $("exports-run");
    button.disabled = true;
    try {
      const run = await call("POST", "manage/exports/run", { body: {} });
      notice(`Exports run: ${run.sent} sent, ${run.failed} failed, ${run.pending} pending.`, false);
    } catch (error) {
      notice(error.message, true);
    } finally {
      button.disabled = false;
      await refresh();
    }
  });
})();
