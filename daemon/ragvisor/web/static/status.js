// The operator's page (GET /ui/status): /readyz and /status every 5 s, /status/history every
// 15 s, and "sync now" with the admin token kept in sessionStorage only.
"use strict";

(() => {
  const { el, say, describeFailure } = window.ragvisor;
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = "ragvisor.adminToken";
  const STATUS_EVERY_MS = 5000;
  const HISTORY_EVERY_MS = 15000;
  const SKIPPED_SHOWN = 10; // of the report's list; every skip is also a log line
  let lastGood = null;

  // --- small builders -----------------------------------------------------------------------

  function show(value) {
    if (value === null || value === undefined) return "–";
    if (typeof value === "boolean") return value ? "yes" : "no";
    if (typeof value === "number") {
      if (Number.isInteger(value)) return String(value);
      return Math.abs(value) >= 100 ? value.toFixed(0) : value.toFixed(2);
    }
    if (Array.isArray(value)) return value.length ? value.map(show).join(", ") : "none";
    if (typeof value === "object") {
      return Object.entries(value).map(([k, v]) => `${k} ${show(v)}`).join(", ") || "none";
    }
    return String(value);
  }

  /** A two-column table of [label, value-or-node] rows. */
  function kv(rows) {
    const table = el("table", "kv");
    const body = document.createElement("tbody");
    for (const [label, value] of rows) {
      const tr = document.createElement("tr");
      tr.append(el("th", "", label));
      const td = document.createElement("td");
      if (value instanceof Node) td.append(value);
      else td.textContent = show(value);
      tr.append(td);
      body.append(tr);
    }
    table.append(body);
    return table;
  }

  function badge(text, tone, className) {
    return el("span", `state ${tone}${className ? ` ${className}` : ""}`, text);
  }

  function card(id, title, ...children) {
    const node = $(id);
    node.replaceChildren(el("h3", "", title), ...children);
  }

  function age(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 90) return `${Math.round(seconds)} s ago`;
    if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
    return `${(seconds / 3600).toFixed(1)} h ago`;
  }

  function when(unix) {
    return unix ? new Date(unix * 1000).toLocaleString() : "–";
  }

  // --- sections -----------------------------------------------------------------------------

  function renderReadiness(ready) {
    const checks = Object.entries(ready.checks || {}).map(([name, check]) => {
      const ok = check && check.ok;
      const optional = check && check.required === false ? " (informs only)" : "";
      const text = ok ? "ok" : `failing${check && check.error ? `: ${check.error}` : ""}`;
      return [`${name}${optional}`, badge(text, ok ? "good" : "bad")];
    });
    const capabilities = Object.entries(ready.capabilities || {})
      .map(([name, on]) => `${name} ${on ? "served" : "not served"}`)
      .join(", ");
    card(
      "readiness",
      "Readiness",
      badge(ready.ready ? "Ready" : "Not ready", ready.ready ? "good" : "bad"),
      kv([["capabilities", capabilities], ...checks]),
    );
  }

  function renderLanes(lanes) {
    const table = el("table", "data");
    const head = document.createElement("thead");
    const row = document.createElement("tr");
    for (const name of ["lane", "active", "waiting", "rejected", "admitted", "slots + queue"]) row.append(el("th", "", name));
    head.append(row);
    const body = document.createElement("tbody");
    for (const [name, lane] of Object.entries(lanes || {})) {
      const tr = document.createElement("tr");
      tr.dataset.lane = name;
      tr.append(el("th", "", name));
      for (const value of [lane.active, lane.waiting, lane.rejected, lane.admitted]) tr.append(el("td", "", show(value)));
      tr.append(el("td", "", `${lane.max_concurrent} + ${lane.max_queue}`));
      body.append(tr);
    }
    table.append(head, body);
    const wrap = el("div", "table-wrap");
    wrap.append(table);
    card("lanes", "Lanes", wrap);
  }

  function breakerTone(state) {
    return state === "closed" ? "good" : state === "open" ? "bad" : "warn";
  }

  function renderBackends(backends) {
    const section = $("backends");
    section.replaceChildren();
    for (const [name, backend] of Object.entries(backends || {})) {
      const box = el("div", "card");
      box.dataset.backend = name;
      box.append(el("h3", "", `${name} — ${backend.kind || "?"}`));
      const rows = [["model", backend.model], ["url", backend.url]];
      if (backend.breaker) {
        const breaker = backend.breaker;
        const wrap = document.createElement("span");
        wrap.append(badge(breaker.state, breakerTone(breaker.state), "breaker"));
        const extra = [];
        if (breaker.retry_in_s !== null && breaker.retry_in_s !== undefined) extra.push(`retry in ${Math.ceil(breaker.retry_in_s)} s`);
        extra.push(`opened ${breaker.opened} time${breaker.opened === 1 ? "" : "s"}`);
        if (breaker.consecutive_failures) extra.push(`${breaker.consecutive_failures} failures in a row`);
        wrap.append(` ${extra.join(" · ")}`);
        rows.push(["breaker", wrap]);
      } else {
        rows.push(["breaker", "not supervised (in process)"]);
      }
      if (backend.ladder) {
        const ladder = backend.ladder;
        const step = ladder.last_step
          ? `${ladder.last_step.step} ${ladder.last_step.outcome}${ladder.last_step.error ? ` (${ladder.last_step.error})` : ""} at ${when(ladder.last_step.at)}`
          : "none";
        rows.push(["ladder", `${ladder.running ? "climbing now" : "idle"} · ${ladder.runs} climb${ladder.runs === 1 ? "" : "s"}`]);
        rows.push(["last step", step]);
        rows.push(["restarts this hour", `${ladder.restarts_last_hour} of ${ladder.restart_budget_per_hour}`]);
      }
      if (backend.worker) {
        const worker = backend.worker;
        rows.push(["worker", badge(worker.state || "?", worker.state === "running" ? "good" : "warn", "worker-state")]);
        rows.push(["worker pid", worker.pid]);
        rows.push(["worker restarts", el("span", "worker-restarts", show(worker.restarts))]);
        rows.push(["last exit", worker.last_exit]);
      }
      box.append(kv(rows));
      section.append(box);
    }
  }

  function renderMemory(memory) {
    if (!memory) return;
    const tone = memory.level === "ok" ? "good" : memory.level === "pressure" ? "warn" : memory.level === "critical" ? "bad" : "warn";
    const rows = [
      ["available", `${show(memory.available_mb)} of ${show(memory.total_mb)} MB`],
      ["swap used", `${show(memory.swap_used_mb)} of ${show(memory.swap_total_mb)} MB`],
      ["PSI some / full (avg10)", `${show(memory.psi_some_avg10)} / ${show(memory.psi_full_avg10)}`],
    ];
    for (const [name, mb] of Object.entries(memory.rss_mb || {})) rows.push([`RSS ${name}`, `${show(mb)} MB`]);
    if (memory.reasons && memory.reasons.length) rows.unshift(["why", memory.reasons.join("; ")]);
    if (memory.probe_error) rows.push(["probe error", memory.probe_error]);
    card("memory", "Memory", badge(memory.level || "unknown", tone), kv(rows));
  }

  function renderSync(sync) {
    if (!sync) return;
    const failures = Number(sync.consecutive_failures) || 0;
    const rows = [
      ["state", `${sync.running ? "running" : "idle"} (last trigger: ${sync.trigger || "–"})`],
      ["last success", sync.last_sync_age_s == null ? "never since start" : age(sync.last_sync_age_s)],
      ["last error", sync.last_error ? `${sync.last_error}${failures > 1 ? ` (${failures} syncs in a row)` : ""}` : "none"],
      ["every", sync.interval_s ? `${sync.interval_s} s` : "on demand only"],
    ];
    if (sync.lease) {
      const whose = sync.lease.mine ? "this daemon" : show(sync.lease.holder);
      const left = Number(sync.lease.expires_in_s);
      rows.push(["lease", left <= 0 ? `${whose}, expired ${show(-left)} s ago` : `${whose}, ${show(left)} s left`]);
    } else if ("lease" in sync) {
      rows.push(["lease", "free (no daemon is syncing)"]);
    }
    const report = sync.last_report;
    // The report lists the first 100 skips and counts them all in `skipped_count`.
    const skipped = Array.isArray(report && report.skipped) ? report.skipped : [];
    const skippedTotal = (report && report.skipped_count) ?? skipped.length;
    if (report) rows.push(...reportRows(report, skippedTotal));
    if (sync.token_counts) rows.push(["token counts", tokenCountsText(sync.token_counts)]);
    const children = [kv(rows)];
    if (skipped.length) {
      const list = el("ul", "skipped");
      const shown = skipped.slice(0, SKIPPED_SHOWN);
      for (const item of shown) list.append(el("li", "", `${show(item.path)} — ${show(item.reason)}`));
      if (skippedTotal > shown.length) {
        list.append(el("li", "meta", `and ${skippedTotal - shown.length} more (logged as sync.file_skipped)`));
      }
      children.push(el("p", "meta", "Skipped in the last sync"), list);
    }
    card("sync", "Sync", ...children);
  }

  /** The last report in the words of `ragvisor status`: outcomes, skips, embeddings, time, why. */
  function reportRows(report, skippedTotal) {
    const counts = (value) => Object.entries(value || {}).map(([k, v]) => `${v} ${k}`).join(", ") || "none";
    const rows = [
      ["last report", `documents ${counts(report.documents)}; skipped ${skippedTotal}; ` +
        `${show(report.embeddings_computed)} embedded, ${show(report.embeddings_reused)} reused, in ${show(report.seconds)} s`],
      ["chunks", counts(report.chunks)],
    ];
    const why = report.changed_because || {};
    if (Object.keys(why).length) rows.push(["changed because", counts(why)]);
    return rows;
  }

  function tokenCountsText(counts) {
    if (counts.running) return "counting now";
    if (!counts.finished_at) return "not run yet (after the next sync, or 10 s after start)";
    return `last pass counted ${show(counts.counted)}, pruned ${show(counts.pruned)} in ${show(counts.duration_ms)} ms`;
  }

  function renderStore(store) {
    if (!store) return;
    const rows = [
      ["backend", store.backend],
      ["state", store.ok ? "ok" : `failing${store.error ? `: ${store.error}` : ""}`],
      ["documents", store.documents],
      ["chunks", store.chunks],
      ["vectors", store.vectors],
    ];
    const generations = store.generations || {};
    if (generations.active) rows.push(["model", generations.active.model]);
    const children = [kv(rows)];
    const migration = generations.migration;
    if (migration) {
      const done = Number(migration.chunks_done);
      const total = Number(migration.chunks_total);
      const progress = document.createElement("progress");
      progress.max = total > 0 ? total : 1;
      progress.value = total > 0 ? done : Number(migration.ratio || 0);
      progress.setAttribute("aria-label", "Model migration");
      children.push(el("p", "meta", `Model migration to ${generations.building ? generations.building.model : "a new model"}: ${show(done)} of ${show(total)} chunks`));
      children.push(progress);
    }
    card("store", "Store", ...children);
  }

  // --- polling ------------------------------------------------------------------------------

  function markUpdated() {
    lastGood = new Date();
    $("updated").textContent = `Updated ${lastGood.toLocaleTimeString()} · refreshes every ${STATUS_EVERY_MS / 1000} s`;
    say($("stale"), "");
  }

  function markStale() {
    const since = lastGood ? lastGood.toLocaleTimeString() : "never";
    say($("stale"), `Cannot reach the daemon — showing data from ${since}.`);
  }

  async function refreshStatus() {
    try {
      const [readyResponse, statusResponse] = await Promise.all([fetch("/readyz"), fetch("/status")]);
      renderReadiness(await readyResponse.json()); // 503 has the same body: not ready
      if (!statusResponse.ok) throw new Error(`status ${statusResponse.status}`);
      const status = await statusResponse.json();
      renderLanes(status.lanes);
      renderBackends(status.backends);
      renderMemory(status.memory);
      renderSync(status.sync);
      renderStore(status.store);
      markUpdated();
    } catch (_) {
      markStale();
    }
  }

  async function refreshHistory() {
    try {
      const response = await fetch("/status/history");
      if (!response.ok) return;
      const history = await response.json();
      $("plots").replaceChildren(...window.ragvisorPlots.plots(history));
    } catch (_) {
      // the status poll reports an unreachable daemon
    }
  }

  // --- sync now -----------------------------------------------------------------------------

  function storedToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch (_) {
      return null;
    }
  }

  function showTokenState() {
    const saved = Boolean(storedToken());
    $("admin-token-field").hidden = saved;
    $("token-saved").hidden = !saved;
    $("forget-token").hidden = !saved;
  }

  async function syncNow(event) {
    event.preventDefault();
    const result = $("sync-now-result");
    const typed = $("admin-token").value.trim();
    const token = storedToken() || typed;
    if (!token) {
      result.textContent = "Type the admin token first (the admin_token file in the data directory).";
      $("admin-token").focus();
      return;
    }
    result.textContent = "Starting a sync…";
    let response;
    try {
      response = await fetch("/admin/sync", { method: "POST", headers: { Authorization: `Bearer ${token}` } });
    } catch (_) {
      result.textContent = "Cannot reach the daemon.";
      return;
    }
    if (response.status === 401 || response.status === 403) {
      sessionStorage.removeItem(TOKEN_KEY);
      $("admin-token").value = "";
      showTokenState();
      result.textContent = "The admin token was refused. Type it again.";
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    $("admin-token").value = "";
    showTokenState();
    if (response.status === 202) result.textContent = "Sync started. Its report appears under Sync when it ends.";
    else if (response.status === 409) result.textContent = "A sync is already running.";
    else if (response.ok) result.textContent = "Sync finished.";
    else result.textContent = await describeFailure(response);
    refreshStatus();
  }

  $("sync-now-form").addEventListener("submit", syncNow);
  $("forget-token").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showTokenState();
    $("sync-now-result").textContent = "Token forgotten.";
  });
  showTokenState();
  refreshStatus();
  refreshHistory();
  setInterval(refreshStatus, STATUS_EVERY_MS);
  setInterval(refreshHistory, HISTORY_EVERY_MS);
})();
