/* The tenant portal: reads the token from the URL fragment (never sent to the server by the browser), removes it
   from the address, and reads everything it shows from the portal's data routes with the token in the
   Authorization header. Every value from a response is rendered as text (MeteringUI.h). */
(function () {
  "use strict";

  const UI = window.MeteringUI;
  const { h, fill, decimal, estimate, money, addDecimals } = UI;

  const root = document.getElementById("portal");
  const path = location.pathname.replace(/\/+$/, "");
  const tenant = decodeURIComponent(path.split("/").pop());
  const dataBase = new URL(path + "/data/", location.href).href;
  const token = takeToken();

  const KIND_WORD = { max: "peak", min: "low", latest: "last" };
  const ADDITIVE = new Set(["sum", "count"]);

  function takeToken() {
    const key = "metering-portal:" + tenant;
    let value = new URLSearchParams(location.hash.slice(1)).get("token");
    try {
      // Kept for this tab only, so a reload still works once the address no longer shows it.
      if (value) sessionStorage.setItem(key, value);
      else value = sessionStorage.getItem(key);
    } catch (error) {
      /* storage may be off in a third-party frame: the token lives in memory only */
    }
    if (location.hash) history.replaceState(null, "", location.pathname + location.search);
    return value;
  }

  // -- start ---------------------------------------------------------------------------------------------

  async function main() {
    if (!token) {
      stop("This page needs its link", "Open it from the link you were given: it carries the access token.");
      return;
    }
    const api = UI.client(dataBase, token);
    let overview, preview, statements;
    try {
      [overview, preview, statements] = await Promise.all([
        api.get("overview"),
        api.get("invoices/preview"),
        api.get("statements"),
      ]);
    } catch (error) {
      failed(error, main);
      return;
    }
    hideNotice();
    const context = {
      api,
      overview,
      preview,
      dates: UI.dates(overview.timezone),
      asOf: Date.parse(overview.as_of),
    };
    renderHeader(context);
    renderTiles(context);
    await renderMeters(context);
    renderStatements(context, statements.items);
    fill(document.getElementById("foot"), "Times in " + overview.timezone + ". Usage shows here within a minute of being recorded.");
    root.setAttribute("aria-busy", "false");
    root.setAttribute("data-ready", "true");
  }

  function stop(title, detail, bad = true) {
    const notice = document.getElementById("notice");
    notice.className = "notice" + (bad ? " notice--bad" : "");
    fill(notice, h("p", { class: "notice__title" }, title), h("p", {}, detail));
    notice.hidden = false;
    // Nothing is loading any more: no skeleton stays behind the refusal.
    fill(document.getElementById("subtitle"));
    root.setAttribute("aria-busy", "false");
    root.setAttribute("data-ready", "true");
    root.setAttribute("data-state", "refused");
    for (const id of ["tiles", "meters", "statements"]) document.getElementById(id).hidden = true;
  }

  function hideNotice() {
    document.getElementById("notice").hidden = true;
  }

  function failed(error, retry) {
    const status = error instanceof UI.ApiError ? error.status : 0;
    if (status === 401) {
      stop("This link has expired or is not valid", error.message);
    } else if (status === 404) {
      stop("This usage page is not available", error.message);
    } else if (status === 503 || status === 0) {
      const wait = Math.min(Math.max(error.retryAfter || 5, 2), 60);
      const notice = document.getElementById("notice");
      notice.className = "notice";
      fill(notice, h("p", { class: "notice__title" }, "Usage is unavailable right now"), h("p", {}, "Trying again in " + wait + " s."));
      notice.hidden = false;
      setTimeout(retry, wait * 1000);
    } else {
      stop("Something went wrong", error.message || String(error));
    }
  }

  // -- header and tiles ----------------------------------------------------------------------------------

  function renderHeader({ overview }) {
    fill(document.getElementById("subtitle"), tenant + " · " + overview.plan + " plan");
  }

  function tile(id, value, note) {
    const node = document.getElementById(id);
    fill(node.querySelector(".tile__value"), value);
    node.querySelector(".tile__value").title = value;
    fill(node.querySelector(".tile__note"), note);
  }

  function renderTiles({ overview, preview, dates, asOf }) {
    const period = overview.period;
    const left = Math.max(0, Math.ceil((Date.parse(period.end) - asOf) / 86400000));
    tile(
      "tile-period",
      dates.localDate(period.first_day).replace(/,? \d{4}$/, "") + " – " + dates.localDate(period.last_day),
      left === 1 ? "1 day left" : left + " days left",
    );
    if (!overview.priced) {
      tile("tile-cost", "No charges", "Your plan has no usage charges");
      tile("tile-forecast", "—", "Nothing to forecast");
      return;
    }
    tile("tile-cost", money(preview.subtotal, preview.currency), "Invoice preview as of " + dates.time(asOf));
    if (preview.forecast) {
      tile("tile-forecast", money(preview.forecast.subtotal, preview.currency), "At the period's end, at the pace so far");
    } else {
      tile("tile-forecast", "—", "After the period's first day");
    }
  }

  // -- meters --------------------------------------------------------------------------------------------

  async function renderMeters(context) {
    const section = document.getElementById("meters");
    const meters = context.overview.meters;
    if (!meters.length) {
      fill(section, h("div", { class: "card empty", "data-empty": "meters" }, "No usage yet this period. It shows here within a minute of being recorded."));
      return;
    }
    const cards = meters.map((meter) => meterCard(context, meter));
    fill(section, cards.map((card) => card.node));
    await Promise.all(cards.map((card) => card.loaded));
  }

  function linesOf(lines, metric) {
    return (lines || []).filter((line) => line.metric === metric && line.amount !== null);
  }

  function meterCard(context, meter) {
    const { overview, preview } = context;
    const title = meter.description || meter.metric;
    const figure = h("span", { class: "figure__value", "data-value": meter.total }, decimal(meter.total));
    const head = h(
      "div",
      { class: "meter__head" },
      h(
        "div",
        { class: "meter__title" },
        h("h2", {}, title),
        h("p", { class: "meter__meta muted small" }, h("code", {}, meter.metric), " · " + meter.aggregation + " · " + decimal(String(meter.event_count)) + " events"),
      ),
      costOf(overview, preview, meter),
    );
    const quota = h("div", { class: "quota", "aria-live": "polite" }, UI.skeleton("line"), UI.skeleton("line"));
    const summary = h(
      "div",
      { class: "meter__summary" },
      h(
        "div",
        {},
        h("p", { class: "tile__label" }, "This period"),
        h("div", { class: "figure" }, figure, h("span", { class: "figure__unit" }, meter.unit)),
        forecastOf(preview, meter),
      ),
      quota,
    );
    const chart = chartPanel(context, meter);
    const body = h("div", { class: "meter__body" }, chart.node);
    const breakdown = meter.group_by.length ? breakdownPanel(context, meter) : null;
    if (breakdown) body.append(breakdown.node);
    const node = h("article", { class: "card meter", "data-metric": meter.metric }, head, summary, body);
    const loaded = Promise.all([loadQuota(context, meter, quota), chart.loaded, breakdown && breakdown.loaded]);
    return { node, loaded };
  }

  function costOf(overview, preview, meter) {
    if (!overview.priced || !meter.priced) return null;
    const lines = linesOf(preview.lines, meter.metric);
    const amount = addDecimals(lines.map((line) => line.amount));
    return h(
      "div",
      { class: "meter__cost" },
      h("p", { class: "tile__label" }, "So far"),
      h("p", { class: "meter__amount", "data-amount": amount }, money(amount, preview.currency)),
    );
  }

  function forecastOf(preview, meter) {
    const ahead = preview.forecast && (preview.forecast.lines || []).find((line) => line.metric === meter.metric && line.kind === "usage");
    if (!ahead) return h("p", { class: "meter__forecast muted small" }, "\u00a0");
    const cost = meter.priced && ahead.amount !== null ? " · " + money(ahead.amount, preview.currency) : "";
    const verb = ADDITIVE.has(meter.aggregation) ? "Forecast at period end ≈ " : "At period end ≈ ";
    return h("p", { class: "meter__forecast muted small" }, verb + estimate(ahead.quantity) + " " + meter.unit + cost);
  }

  // -- quota ---------------------------------------------------------------------------------------------

  async function loadQuota({ api }, meter, node) {
    let quota;
    try {
      quota = await api.get("quota/" + encodeURIComponent(meter.metric));
    } catch (error) {
      fill(node, h("p", { class: "muted small" }, "The limits could not be read: " + error.message));
      return;
    }
    renderQuota(node, meter, quota);
  }

  function renderQuota(node, meter, quota) {
    const soft = quota.soft_limit === null ? null : Number(quota.soft_limit);
    const hard = quota.hard_limit === null ? null : Number(quota.hard_limit);
    const current = Number(quota.current);
    node.setAttribute("data-decision", quota.decision);
    if (soft === null && hard === null) {
      fill(node, h("p", { class: "quota--none" }, h("span", { class: "chip" }, "No limit"), " Your plan sets no limit on this meter."));
      return;
    }
    const scale = Math.max(hard !== null ? hard : soft * 1.25, current, 1e-12);
    const percent = (value) => Math.min(100, (value / scale) * 100);
    const fillBar = h("span", { class: "bar__fill quota__fill" });
    fillBar.style.width = percent(current) + "%";
    const over = hard !== null && current >= hard;
    if (over) fillBar.classList.add("quota__fill--bad");
    else if (soft !== null && current >= soft) fillBar.classList.add("quota__fill--warn");
    const bar = h(
      "div",
      {
        class: "bar quota__bar",
        role: "meter",
        "aria-label": "Use of the limit",
        "aria-valuemin": "0",
        "aria-valuemax": String(scale),
        "aria-valuenow": String(current),
      },
      fillBar,
    );
    for (const [kind, value] of [["soft", soft], ["hard", hard]]) {
      if (value === null) continue;
      const mark = h("span", { class: "quota__mark quota__mark--" + kind, "data-limit": kind, title: kind + " limit " + value }, h("span", { class: "quota__mark-label" }, kind));
      mark.style.left = percent(value) + "%";
      // A label at either end stays inside the bar's width.
      if (percent(value) > 92) mark.classList.add("quota__mark--end");
      else if (percent(value) < 8) mark.classList.add("quota__mark--start");
      bar.append(mark);
    }
    const limit = hard !== null ? quota.hard_limit : quota.soft_limit;
    const chip = {
      allowed: ["chip--ok", "Within limits"],
      warning: ["chip--warn", "Over the soft limit"],
      denied: ["chip--bad", "Limit reached"],
      unlimited: ["", "No limit"],
    }[quota.decision] || ["", quota.decision];
    const remaining = quota.remaining !== null ? decimal(quota.remaining) + " " + meter.unit + " left" : "soft limit only";
    fill(
      node,
      h(
        "div",
        { class: "quota__line" },
        h("span", {}, decimal(quota.current) + " of " + decimal(limit) + " " + meter.unit + (hard !== null ? "" : " (soft)")),
        h("span", { class: "chip " + chip[0] }, chip[1]),
      ),
      bar,
      h("p", { class: "muted small" }, remaining + (soft !== null && hard !== null ? " · soft limit " + decimal(quota.soft_limit) : "")),
    );
  }

  // -- the chart -----------------------------------------------------------------------------------------

  function ranges({ overview }, meter) {
    const oldest = overview.previous_periods[overview.previous_periods.length - 1];
    const all = [
      { id: "today", label: "Today", granularity: "hour", start: overview.today, end: overview.today },
      { id: "period", label: "This period", granularity: "day", start: overview.period.first_day, end: overview.period.last_day },
      { id: "periods", label: "3 periods", granularity: "day", start: oldest.first_day, end: overview.period.last_day },
    ];
    // Distinct counts are kept per day and period, not per hour.
    return meter.aggregation === "unique_count" ? all.slice(1) : all;
  }

  function axisLabel(meter, granularity) {
    const word = KIND_WORD[meter.aggregation];
    if (word) return meter.unit + ", " + (granularity === "hour" ? "hourly " : "daily ") + word;
    return meter.unit + " / " + granularity;
  }

  function chartPanel(context, meter) {
    const options = ranges(context, meter);
    const title = h("h3", {}, "Usage");
    const note = h("p", { class: "panel__note muted small" }, "\u00a0");
    const area = h("div", { class: "chart", "data-chart": meter.metric });
    // The chart's figures as a table, for screen readers (a table ignores a 1-pixel width: its wrapper clips it).
    const table = h("table", { "data-buckets": meter.metric });
    const buttons = options.map((range) =>
      h("button", { type: "button", "aria-pressed": range.id === "period" ? "true" : "false", "data-range": range.id, onclick: () => show(range) }, range.label),
    );
    const node = h(
      "div",
      { class: "panel" },
      h("div", { class: "panel__head" }, title, h("div", { class: "segmented", role: "group", "aria-label": "Range" }, buttons)),
      note,
      area,
      h("div", { class: "sr-only" }, table),
    );
    let plot = null;
    let request = 0;

    async function show(range) {
      const mine = ++request;
      for (const button of buttons) button.setAttribute("aria-pressed", button.getAttribute("data-range") === range.id ? "true" : "false");
      area.setAttribute("aria-busy", "true");
      let history;
      try {
        history = await context.api.get("usage/" + encodeURIComponent(meter.metric) + "/history", {
          params: { start: range.start, end: range.end, granularity: range.granularity },
        });
      } catch (error) {
        if (mine === request) fill(note, "The history could not be read: " + error.message);
        return;
      }
      if (mine !== request) return;
      if (plot) plot.destroy();
      area.replaceChildren();
      plot = draw(context, meter, range, history.items, area, note, table);
      area.setAttribute("aria-busy", "false");
    }

    area.append(UI.skeleton("block"));
    const loaded = show(options.find((range) => range.id === "period"));
    return { node, loaded };
  }

  function draw(context, meter, range, items, area, note, table) {
    const { dates, asOf, overview } = context;
    const hour = range.granularity === "hour";
    const xs = items.map((item) => Date.parse(item.start) / 1000);
    const ys = items.map((item) => (Date.parse(item.start) > asOf ? null : Number(item.total)));
    const used = items.filter((item) => item.event_count > 0);
    const label = (item) => (hour ? dates.time(item.start) : dates.weekday(item.start));
    const summary = () => {
      const count = used.length + " of " + items.filter((item) => Date.parse(item.start) <= asOf).length + (hour ? " hours" : " days") + " with usage";
      if (!ADDITIVE.has(meter.aggregation) || !used.length) return count;
      return decimal(addDecimals(used.map((item) => item.total))) + " " + meter.unit + " in this range · " + count;
    };
    fill(note, summary());
    area.classList.toggle("chart--empty", used.length === 0);
    area.setAttribute("data-empty", "No usage in this range");
    fill(
      table,
      h("caption", {}, (meter.description || meter.metric) + ", " + (hour ? "by hour" : "by day")),
      h("tr", {}, h("th", { scope: "col" }, hour ? "Hour" : "Day"), h("th", { scope: "col" }, meter.unit)),
      used.map((item) => h("tr", { "data-start": item.start }, h("td", {}, label(item)), h("td", { "data-value": item.total }, decimal(item.total)))),
    );
    return UI.barChart(area, {
      xs,
      ys,
      hour,
      timeZone: overview.timezone,
      xLabel: (hour ? "Hour" : "Day") + " (" + overview.timezone + ")",
      yLabel: axisLabel(meter, range.granularity),
      onHover: (index) => {
        if (index === null || index === undefined || ys[index] === null) {
          fill(note, summary());
          return;
        }
        fill(note, label(items[index]) + ": " + decimal(items[index].total) + " " + meter.unit);
      },
    });
  }

  // -- the breakdown -------------------------------------------------------------------------------------

  function breakdownPanel(context, meter) {
    const list = h("ol", { class: "breakdown__list", "data-breakdown": meter.metric });
    const note = h("p", { class: "panel__note muted small" }, "\u00a0");
    const buttons = meter.group_by.map((dimension, index) =>
      h("button", { type: "button", "aria-pressed": index === 0 ? "true" : "false", "data-dimension": dimension, onclick: () => show(dimension) }, dimension),
    );
    const node = h(
      "div",
      { class: "panel" },
      h("div", { class: "panel__head" }, h("h3", {}, "Breakdown"), h("div", { class: "segmented", role: "group", "aria-label": "Dimension" }, buttons)),
      note,
      list,
    );
    let request = 0;

    async function show(dimension) {
      const mine = ++request;
      for (const button of buttons) button.setAttribute("aria-pressed", button.getAttribute("data-dimension") === dimension ? "true" : "false");
      list.setAttribute("aria-busy", "true");
      let usage;
      try {
        usage = await context.api.get("usage/" + encodeURIComponent(meter.metric), { params: { group_by: dimension } });
      } catch (error) {
        if (mine === request) fill(note, "The breakdown could not be read: " + error.message);
        return;
      }
      if (mine !== request) return;
      renderBreakdown(meter, dimension, usage, list, note);
      list.setAttribute("aria-busy", "false");
    }

    fill(list, [0, 1, 2].map(() => h("li", { class: "breakdown__row" }, UI.skeleton("line"))));
    const loaded = show(meter.group_by[0]);
    return { node, loaded };
  }

  function groupLabel(group, dimension) {
    if (group.kind === "absent") return "(no " + dimension + ")";
    if (group.kind === "overflow") return "(other values)";
    return group.key === "" ? "(empty)" : group.key;
  }

  function renderBreakdown(meter, dimension, usage, list, note) {
    const order = { value: 0, absent: 1, overflow: 2 };
    const groups = usage.groups
      .filter((group) => group.event_count > 0)
      .sort((a, b) => order[a.kind] - order[b.kind] || Number(b.total) - Number(a.total));
    if (!groups.length) {
      fill(note, "\u00a0");
      fill(list, h("li", { class: "empty" }, "No usage to break down yet."));
      return;
    }
    const additive = ADDITIVE.has(meter.aggregation);
    const largest = Math.max(...groups.map((group) => Math.abs(Number(group.total))), 1e-12);
    const total = Number(usage.total);
    fill(
      note,
      additive
        ? "This period by " + dimension + ": adds up to " + decimal(usage.total) + " " + meter.unit
        : "This period by " + dimension + ": each group's " + (KIND_WORD[meter.aggregation] || "figure"),
    );
    fill(
      list,
      groups.map((group) => {
        const share = additive && total > 0 ? shareOf(Number(group.total) / total) : null;
        const barFill = h("span", { class: "bar__fill" });
        barFill.style.width = Math.min(100, (Math.abs(Number(group.total)) / largest) * 100) + "%";
        return h(
          "li",
          { class: "breakdown__row", "data-kind": group.kind, "data-value": group.total },
          h("span", { class: "breakdown__label" + (group.kind === "value" ? "" : " breakdown__label--other"), title: groupLabel(group, dimension) }, groupLabel(group, dimension)),
          h("span", { class: "breakdown__value" }, decimal(group.total), share !== null ? h("span", { class: "breakdown__share" }, share) : null),
          h("span", { class: "bar", "aria-hidden": "true" }, barFill),
        );
      }),
    );
  }

  function shareOf(fraction) {
    const percent = Math.round(fraction * 1000) / 10;
    return percent === 0 && fraction > 0 ? "<0.1%" : percent + "%";
  }

  // -- statements ----------------------------------------------------------------------------------------

  const isoDate = (timeZone) => new Intl.DateTimeFormat("en-CA", { timeZone, year: "numeric", month: "2-digit", day: "2-digit" });

  function renderStatements({ api, overview, dates }, items) {
    const body = document.getElementById("statements-body");
    const all = document.getElementById("statements-all");
    if (!items.length) {
      fill(body, h("p", { class: "empty" }, "No closed periods yet. Each period's statement appears here once it closes."));
      return;
    }
    const key = isoDate(overview.timezone);
    const newest = [...items].sort((a, b) => Date.parse(b.period_start) - Date.parse(a.period_start));
    const priced = overview.priced || newest.some((statement) => statement.subtotal && Number(statement.subtotal) !== 0);
    const save = async (button, name, params) => {
      button.disabled = true;
      try {
        UI.download(await api.get("statements", { accept: "text/csv", params }), name);
      } catch (error) {
        button.title = error.message;
      } finally {
        button.disabled = false;
      }
    };
    fill(
      all,
      h("button", { type: "button", class: "button", "data-csv": "all", onclick: (event) => save(event.currentTarget, "statements-" + tenant + ".csv", {}) }, "All as CSV"),
    );
    const rows = newest.map((statement) => {
      const start = key.format(new Date(statement.period_start));
      const last = Date.parse(statement.period_end) - 1;
      const period = dates.day(statement.period_start) + " – " + dates.dayYear(last);
      return h(
        "tr",
        { "data-period": start },
        h("td", {}, period),
        h("td", { class: "hide-narrow" }, statement.plan || "—"),
        priced ? h("td", { class: "num" }, statement.subtotal && statement.currency ? money(statement.subtotal, statement.currency) : "—") : null,
        h(
          "td",
          { class: "num" },
          h("button", { type: "button", class: "button", "data-csv": start, onclick: (event) => save(event.currentTarget, "statement-" + tenant + "-" + start + ".csv", { period: start }) }, "CSV"),
        ),
      );
    });
    fill(
      body,
      h(
        "table",
        { class: "table" },
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Period"), h("th", { scope: "col", class: "hide-narrow" }, "Plan"), priced ? h("th", { scope: "col", class: "num" }, "Amount") : null, h("th", { scope: "col" }, h("span", { class: "sr-only" }, "Download")))),
        h("tbody", {}, rows),
      ),
    );
  }

  main();
})();
