// Small SVG line plots of /status/history, drawn with DOM calls (no library, no HTML strings).
"use strict";

(() => {
  const NS = "http://www.w3.org/2000/svg";
  const W = 300;
  const H = 100;
  const PAD = { left: 34, right: 4, top: 6, bottom: 14 };

  function svgEl(tag, attrs, text) {
    const node = document.createElementNS(NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function short(value) {
    if (value === null || value === undefined) return "–";
    const n = Number(value);
    if (Math.abs(n) >= 100000) return `${(n / 1000).toFixed(0)}k`;
    if (Math.abs(n) >= 100) return n.toFixed(0);
    return n.toFixed(1);
  }

  function clock(seconds) {
    return new Date(seconds * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  /**
   * A figure with one line per series. `lines` is [{name, values}], values aligned with `t`
   * (null for a gap). The x axis spans the whole window, so an hour-old daemon fills it.
   */
  function plot(key, caption, unit, t, lines, windowS) {
    const figure = document.createElement("figure");
    figure.className = "plot";
    figure.dataset.series = key;
    const title = document.createElement("figcaption");
    const last = lines.map((line) => {
      const values = line.values.filter((v) => v !== null && v !== undefined);
      return values.length ? `${line.name} ${short(values[values.length - 1])}` : null;
    }).filter(Boolean);
    title.textContent = `${caption}${last.length ? ` — now: ${last.join(", ")} ${unit}` : ""}`;
    figure.append(title);
    const all = lines.flatMap((line) => line.values).filter((v) => v !== null && v !== undefined);
    if (!t.length || !all.length) {
      const none = document.createElement("p");
      none.className = "meta";
      none.textContent = "No samples yet.";
      figure.append(none);
      return figure;
    }
    let low = Math.min(...all);
    let high = Math.max(...all);
    if (high === low) {
      high += Math.max(1, Math.abs(high) * 0.05);
      low = Math.max(0, low - Math.max(1, Math.abs(low) * 0.05));
    }
    // From the oldest sample kept (at most the window) to the newest: a young daemon's few
    // minutes fill the plot rather than a sliver at its right edge.
    const end = t[t.length - 1];
    const start = t[0] < end ? t[0] : end - 1;
    const x = (ts) => PAD.left + ((ts - start) / Math.max(1, end - start)) * (W - PAD.left - PAD.right);
    const y = (v) => PAD.top + (1 - (v - low) / (high - low)) * (H - PAD.top - PAD.bottom);
    const svg = svgEl("svg", {
      viewBox: `0 0 ${W} ${H}`,
      preserveAspectRatio: "none",
      role: "img",
      "aria-label": `${caption}, last ${Math.round(windowS / 60)} minutes: ${last.join(", ")} ${unit}`,
    });
    for (const v of [low, high]) {
      svg.append(svgEl("line", { class: "grid-line", x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }));
      svg.append(svgEl("text", { class: "axis", x: 2, y: y(v) + 3 }, short(v)));
    }
    svg.append(svgEl("text", { class: "axis", x: PAD.left, y: H - 2 }, clock(start)));
    svg.append(svgEl("text", { class: "axis", x: W - 2, y: H - 2, "text-anchor": "end" }, clock(end)));
    lines.forEach((line, index) => {
      let points = [];
      const flush = () => {
        const series = `series-${index % 4}`;
        if (points.length === 1) {
          // A lone sample between gaps: a dot, since a line needs two.
          const [cx, cy] = points[0].split(",");
          svg.append(svgEl("circle", { class: series, cx, cy, r: 2.2 }));
        } else if (points.length) {
          svg.append(svgEl("polyline", { class: series, points: points.join(" ") }));
        }
        points = [];
      };
      line.values.forEach((v, i) => {
        if (v === null || v === undefined) flush();
        else points.push(`${x(t[i]).toFixed(1)},${y(v).toFixed(1)}`);
      });
      flush();
    });
    figure.append(svg);
    if (lines.length > 1) {
      const legend = document.createElement("div");
      legend.className = "legend";
      lines.forEach((line, index) => {
        const item = document.createElement("span");
        const swatch = document.createElement("span");
        swatch.className = `swatch series-${index % 4}`;
        swatch.textContent = "— ";
        item.append(swatch, line.name);
        legend.append(item);
      });
      figure.append(legend);
    }
    return figure;
  }

  /** Every plot of the status page, from the /status/history body. */
  function plots(history) {
    const t = history.t || [];
    const windowS = history.window_s || 3600;
    const latency = (key) => [{ name: "p50", values: (history[key] || {}).p50 || [] }];
    const rss = Object.entries(history.rss_mb || {}).map(([name, values]) => ({ name, values }));
    return [
      plot("available_mb", "Available memory", "MB", t, [{ name: "available", values: history.available_mb || [] }], windowS),
      plot("rss_mb", "RSS by process", "MB", t, rss, windowS),
      plot("search_ms", "/search latency, median", "ms", t, latency("search_ms"), windowS),
      plot("ask_ms", "/ask latency, median", "ms", t, latency("ask_ms"), windowS),
      plot("first_token_ms", "Time to first token, median", "ms", t, latency("first_token_ms"), windowS),
    ];
  }

  window.ragvisorPlots = { plots };
})();
