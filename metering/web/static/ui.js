/* Shared helpers of the pages (the portal, and the console after it): building DOM from data as text only,
   formatting exact decimals, money and dates, calling the JSON routes, and charts on uPlot.

   Nothing here ever parses HTML: every value from a response becomes a text node or an attribute, so a tenant's
   dimension value such as <img src=x onerror=alert(1)> is shown as those characters and runs nothing. */
(function () {
  "use strict";

  const locale = navigator.language || "en-US";

  // -- DOM, text only ------------------------------------------------------------------------------------

  const SAFE_ATTRIBUTES = /^(class|id|role|title|type|href|download|colspan|scope|tabindex|for|hidden|data-[a-z-]+|aria-[a-z-]+)$/;

  /** An element with attributes and children; strings and numbers become text nodes. */
  function h(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name.startsWith("on") && typeof value === "function") {
        node.addEventListener(name.slice(2), value);
      } else if (SAFE_ATTRIBUTES.test(name)) {
        if (name === "href" && !/^(blob:|#)/.test(String(value))) throw new Error("links go to blobs or anchors only");
        node.setAttribute(name, value === true ? "" : String(value));
      } else {
        throw new Error("attribute not allowed: " + name);
      }
    }
    append(node, children);
    return node;
  }

  function append(node, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /** Replace a node's children. */
  function fill(node, ...children) {
    node.replaceChildren();
    return append(node, children);
  }

  function skeleton(kind, extra) {
    return h("span", { class: "skeleton skeleton--" + kind + (extra ? " " + extra : ""), "aria-hidden": "true" });
  }

  // -- numbers, exactly ----------------------------------------------------------------------------------

  // Intl formats a decimal string exactly (no float in between) up to 100 fraction digits.
  const exact = new Intl.NumberFormat(locale, { maximumFractionDigits: 100 });
  const compact = new Intl.NumberFormat(locale, { notation: "compact", maximumFractionDigits: 1 });
  const approx = new Intl.NumberFormat(locale, { maximumFractionDigits: 2 });

  /** A decimal string grouped for reading, every digit kept: billing figures are exact. */
  function decimal(text) {
    return exact.format(String(text));
  }

  /** A figure that is an estimate (a forecast): two decimals at most. */
  function estimate(text) {
    return approx.format(String(text));
  }

  function short(value) {
    return compact.format(value);
  }

  /** The sum of decimal strings, exactly (BigInt at the longest scale). */
  function addDecimals(values) {
    let scale = 0;
    for (const value of values) scale = Math.max(scale, (String(value).split(".")[1] || "").length);
    let sum = 0n;
    for (const value of values) {
      const [whole, fraction = ""] = String(value).replace(/^-/, "").split(".");
      const units = BigInt(whole + fraction.padEnd(scale, "0"));
      sum += String(value).startsWith("-") ? -units : units;
    }
    const negative = sum < 0n;
    let digits = (negative ? -sum : sum).toString().padStart(scale + 1, "0");
    let text = scale ? digits.slice(0, -scale) + "." + digits.slice(-scale) : digits;
    if (scale) text = text.replace(/\.?0+$/, "");
    return (negative && text !== "0" ? "-" : "") + text;
  }

  function money(amount, currency) {
    try {
      return new Intl.NumberFormat(locale, { style: "currency", currency }).format(String(amount));
    } catch (error) {
      return String(amount) + " " + currency;
    }
  }

  // -- dates in a time zone ------------------------------------------------------------------------------

  function dates(timeZone) {
    const day = new Intl.DateTimeFormat(locale, { timeZone, month: "short", day: "numeric" });
    const dayYear = new Intl.DateTimeFormat(locale, { timeZone, month: "short", day: "numeric", year: "numeric" });
    const time = new Intl.DateTimeFormat(locale, { timeZone, hour: "numeric", minute: "2-digit" });
    const weekday = new Intl.DateTimeFormat(locale, { timeZone, weekday: "short", month: "short", day: "numeric" });
    return {
      day: (instant) => day.format(new Date(instant)),
      dayYear: (instant) => dayYear.format(new Date(instant)),
      time: (instant) => time.format(new Date(instant)),
      weekday: (instant) => weekday.format(new Date(instant)),
      // A local date (YYYY-MM-DD) as the tenant's calendar shows it: noon UTC of that date never changes day.
      localDate: (text) => dayYear.format(new Date(text + "T12:00:00Z")),
    };
  }

  // -- the JSON routes -----------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, problem, retryAfter) {
      super((problem && problem.detail) || "HTTP " + status);
      this.status = status;
      this.problem = problem;
      this.retryAfter = retryAfter;
    }
  }

  /** GETs relative to `base`, with the bearer token in the Authorization header (never in a URL). */
  function client(base, token) {
    async function get(path, { accept = "application/json", params } = {}) {
      const url = new URL(path, base);
      for (const [name, value] of Object.entries(params || {})) url.searchParams.set(name, value);
      const response = await fetch(url, {
        headers: { Authorization: "Bearer " + token, Accept: accept },
        cache: "no-store",
        credentials: "omit",
        referrerPolicy: "no-referrer",
      });
      if (!response.ok) {
        let problem = null;
        try { problem = await response.json(); } catch (error) { /* not a problem body */ }
        throw new ApiError(response.status, problem, Number(response.headers.get("Retry-After")) || null);
      }
      return accept === "application/json" ? response.json() : response.blob();
    }
    return { get };
  }

  /** Save a blob as a file (the CSV downloads), through an object URL that lives for the click only. */
  function download(blob, name) {
    const url = URL.createObjectURL(blob);
    const link = h("a", { href: url, download: name, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  // -- charts --------------------------------------------------------------------------------------------

  /** A bar chart of buckets on uPlot, sized to its container (and resized with it). `xs` are epoch seconds,
      `ys` numbers or null (no bucket yet: the future part of a range). */
  function barChart(container, { xs, ys, timeZone, xLabel, yLabel, hour, onHover }) {
    // Half a bucket of room at either end, so the first and the last bar are whole.
    const half = (hour ? 3600 : 86400) / 2;
    const height = container.clientHeight || 220;
    const colour = getComputedStyle(document.documentElement).getPropertyValue("--accent").trim() || "#2563eb";
    const options = {
      width: Math.max(container.clientWidth, 200),
      height,
      padding: [10, 12, 0, 0],
      legend: { show: false },
      cursor: { y: false, points: { show: false }, drag: { x: false, y: false } },
      tzDate: (seconds) => uPlot.tzDate(new Date(seconds * 1000), timeZone),
      scales: {
        x: { time: true, range: (u, min, max) => [min - half, max + half] },
        y: { range: (u, min, max) => [0, max > 0 ? max * 1.12 : 1] },
      },
      axes: [
        {
          label: xLabel,
          labelSize: 22,
          labelFont: "600 12px " + getComputedStyle(document.body).fontFamily,
          font: "12px " + getComputedStyle(document.body).fontFamily,
          stroke: "#6b7280",
          grid: { show: false },
          ticks: { stroke: "#e5e7eb" },
          values: hour ? undefined : (u, splits) => splits.map((s) => dayLabel(s, timeZone)),
          space: hour ? 48 : 56,
        },
        {
          label: yLabel,
          labelSize: 22,
          labelFont: "600 12px " + getComputedStyle(document.body).fontFamily,
          font: "12px " + getComputedStyle(document.body).fontFamily,
          stroke: "#6b7280",
          size: 52,
          grid: { stroke: "#eef0f3" },
          ticks: { show: false },
          values: (u, splits) => splits.map((s) => short(s)),
        },
      ],
      series: [
        {},
        {
          stroke: colour,
          fill: colour + "cc",
          width: 0,
          points: { show: false },
          paths: uPlot.paths.bars({ size: [0.72, 36], gap: 1 }),
        },
      ],
      hooks: {
        setCursor: [(u) => onHover && onHover(u.cursor.idx)],
      },
    };
    const plot = new uPlot(options, [xs, ys], container);
    const resize = new ResizeObserver(() => {
      const width = Math.max(container.clientWidth, 200);
      if (width !== plot.width) plot.setSize({ width, height });
    });
    resize.observe(container);
    return {
      destroy() {
        resize.disconnect();
        plot.destroy();
      },
    };
  }

  const dayFormats = new Map();
  function dayLabel(seconds, timeZone) {
    if (!dayFormats.has(timeZone)) {
      dayFormats.set(timeZone, new Intl.DateTimeFormat(locale, { timeZone, month: "short", day: "numeric" }));
    }
    return dayFormats.get(timeZone).format(new Date(seconds * 1000));
  }

  window.MeteringUI = Object.freeze({
    h, append, fill, skeleton, decimal, estimate, short, addDecimals, money, dates, client, download, barChart, ApiError,
  });
})();
