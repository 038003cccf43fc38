// The search and ask page (GET /): /search results and the NDJSON stream of POST /ask.
// Everything from the knowledge base is user content: it enters the page as text only.
"use strict";

(() => {
  const { el, say, describeFailure, ms } = window.ragvisor;
  const $ = (id) => document.getElementById(id);
  const form = $("query-form");
  const q = $("q");
  const mode = $("mode");
  const k = $("k");
  const askBtn = $("ask-btn");
  const stopBtn = $("stop-btn");
  const errorBox = $("error");
  const answer = $("answer");
  let streaming = null; // the AbortController of the answer being read

  // Words too common to be worth marking (the daemon's keyword search drops them too).
  const COMMON = new Set(
    ("a an and are as at be by can do does for from has have how i if in is it its of on or " +
      "should so that the this to was what when where which who why will with you your").split(" "),
  );

  /** The query's words worth marking: two characters or more, not common. */
  function queryWords(query) {
    const words = query.toLowerCase().match(/[\p{L}\p{N}_.-]+/gu) || [];
    const cleaned = words.map((w) => w.replace(/^[._-]+|[._-]+$/g, ""));
    return [...new Set(cleaned.filter((w) => w.length >= 2 && !COMMON.has(w)))];
  }

  function escapeRegExp(text) {
    return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  }

  /** `text` as text nodes, with the query's words wrapped in <mark> (case-insensitive). */
  function marked(text, words) {
    const fragment = document.createDocumentFragment();
    if (!words.length) {
      fragment.append(text);
      return fragment;
    }
    // Whole words only: "on" must not light up inside "daemon".
    const alternatives = words.map(escapeRegExp).join("|");
    const pattern = new RegExp(`(?<![\\p{L}\\p{N}])(?:${alternatives})(?![\\p{L}\\p{N}])`, "giu");
    let last = 0;
    for (const match of text.matchAll(pattern)) {
      if (match.index > last) fragment.append(text.slice(last, match.index));
      fragment.append(el("mark", "", match[0]));
      last = match.index + match[0].length;
    }
    if (last < text.length) fragment.append(text.slice(last));
    return fragment;
  }

  function clearError() {
    say(errorBox, "");
  }

  function kValue() {
    const value = Number.parseInt(k.value, 10);
    return Number.isFinite(value) && value > 0 ? value : 5;
  }

  // --- search -------------------------------------------------------------------------------

  async function search() {
    const query = q.value;
    if (!query.trim()) {
      q.focus();
      return;
    }
    clearError();
    const params = new URLSearchParams({ q: query, mode: mode.value, k: String(kValue()) });
    const summary = $("search-summary");
    summary.textContent = "Searching…";
    $("search-section").hidden = false;
    let response;
    try {
      response = await fetch(`/search?${params}`, { headers: { Accept: "application/json" } });
    } catch (_) {
      summary.textContent = "";
      say(errorBox, "Cannot reach the daemon. Is it running?");
      return;
    }
    if (!response.ok) {
      summary.textContent = "";
      say(errorBox, await describeFailure(response));
      return;
    }
    renderResults(await response.json(), queryWords(query));
  }

  function renderResults(body, words) {
    const list = $("results");
    list.replaceChildren();
    const degraded = $("search-degraded");
    if (body.degraded) {
      say(
        degraded,
        "Keyword results only: the embedder (the model that searches by meaning) is not " +
          `answering, so these results match words, not meaning, and may be less relevant. ` +
          `Why: ${body.degraded.reason}`,
      );
    } else {
      say(degraded, "");
    }
    const results = body.results || [];
    const took = Object.values(body.timings_ms || {}).reduce((a, b) => a + Number(b || 0), 0);
    $("search-summary").textContent = results.length
      ? `${results.length} result${results.length === 1 ? "" : "s"} · ${body.mode}` +
        `${body.reranked ? " · reranked" : ""} · ${ms(took)}`
      : `No results · ${body.mode}`;
    for (const hit of results) list.append(resultItem(hit, words));
  }

  function resultItem(hit, words) {
    const item = el("li", "result");
    const head = el("div", "result-head");
    head.append(el("span", "title", hit.title || hit.path));
    head.append(el("span", "score", Number(hit.score).toFixed(3)));
    item.append(head);
    item.append(el("div", "path", hit.path));
    if (hit.heading) item.append(el("div", "heading", hit.heading));
    const snippet = el("p", "snippet");
    snippet.append(marked(hit.snippet || "", words));
    item.append(snippet);
    if (hit.passages && hit.passages.length) {
      const more = el("ul", "passages");
      for (const passage of hit.passages) {
        const row = el("li", "passage-hit");
        const top = el("div", "result-head");
        top.append(el("span", "heading", passage.heading));
        top.append(el("span", "score", Number(passage.score).toFixed(3)));
        row.append(top);
        const text = el("p", "snippet");
        text.append(marked(passage.snippet || "", words));
        row.append(text);
        more.append(row);
      }
      item.append(more);
    }
    return item;
  }

  // --- ask ----------------------------------------------------------------------------------

  function setState(state) {
    answer.dataset.state = state;
    const busy = state === "streaming";
    stopBtn.disabled = !busy;
    askBtn.setAttribute("aria-busy", busy ? "true" : "false");
  }

  function resetAnswer() {
    answer.replaceChildren();
    for (const id of ["answer-note", "answer-degraded", "answer-truncated"]) say($(id), "");
    $("answer-meta").textContent = "";
    $("answer-sources").textContent = "";
    $("citations").replaceChildren();
  }

  async function ask() {
    const question = q.value;
    if (!question.trim()) {
      q.focus();
      return;
    }
    if (streaming) streaming.abort();
    const controller = new AbortController();
    streaming = controller;
    clearError();
    resetAnswer();
    $("ask-section").hidden = false;
    setState("streaming");
    let response;
    try {
      response = await fetch("/ask", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/x-ndjson" },
        body: JSON.stringify({ question, k: kValue(), stream: true }),
        signal: controller.signal,
      });
      if (!response.ok) {
        say(errorBox, await describeFailure(response));
        setState("error");
        return;
      }
      await readStream(response.body, controller);
    } catch (error) {
      if (controller.signal.aborted) {
        if (streaming === controller) {
          say($("answer-note"), "Stopped. The daemon cancelled the rest of the answer.");
          setState("stopped");
        }
        return;
      }
      say(errorBox, "The answer was cut off: the connection to the daemon was lost.");
      setState("error");
    } finally {
      // A newer question may have taken over: only the current one may touch the state.
      if (streaming === controller) {
        streaming = null;
        if (answer.dataset.state === "streaming") setState("error");
      }
    }
  }

  async function readStream(body, controller) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffered = "";
    let passages = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true });
      let newline;
      while ((newline = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, newline).trim();
        buffered = buffered.slice(newline + 1);
        if (!line) continue;
        const event = JSON.parse(line);
        if (event.type === "citations") {
          passages = event.citations || [];
          const dropped = event.dropped ? ` (${event.dropped} more did not fit)` : "";
          $("answer-sources").textContent =
            `Answering from ${passages.length} passage${passages.length === 1 ? "" : "s"}${dropped}…`;
        } else if (event.type === "delta") {
          answer.append(event.text);
        } else if (event.type === "retry") {
          answer.replaceChildren();
          say(
            $("answer-note"),
            `The generator failed mid-answer (${event.reason}); retrying (attempt ${event.attempt})…`,
          );
        } else if (event.type === "done") {
          finish(event);
          return;
        } else if (event.type === "error") {
          const status = event.status ? ` (HTTP ${event.status})` : "";
          say(errorBox, `The answer failed${status}: ${event.error}`);
          setState("error");
          return;
        }
      }
    }
    if (!controller.signal.aborted && answer.dataset.state === "streaming") {
      say(errorBox, "The answer ended early: the daemon closed the stream.");
      setState("error");
    }
  }

  function finish(done) {
    answer.replaceChildren(done.answer || "");
    say($("answer-note"), done.cached ? `From the answer cache (${done.cached} match).` : "");
    if (done.degraded && done.degraded.answer === "extractive") {
      say(
        $("answer-degraded"),
        "Extractive answer: the language model is not available, so this answer is the most " +
          `relevant passages themselves, not written by the model. Why: ${done.degraded.reason}`,
      );
    } else if (done.degraded) {
      say($("answer-degraded"), `Degraded: ${done.degraded.reason}`);
    }
    if (done.truncated) {
      say(
        $("answer-truncated"),
        "The model's context was full: the backend cut the prompt, so the answer may miss " +
          "passages.",
      );
    }
    const timings = done.timings_ms || {};
    const parts = [done.model || "no model (extractive)"];
    if (timings.first_token !== undefined) parts.push(`first words after ${ms(timings.first_token)}`);
    if (timings.total !== undefined) parts.push(`${ms(timings.total)} in all`);
    $("answer-meta").textContent = parts.join(" · ");
    $("answer-sources").textContent = "";
    renderCitations(done.citations || []);
    setState("done");
  }

  function renderCitations(citations) {
    const list = $("citations");
    list.replaceChildren();
    for (const citation of citations) {
      const card = el("li", citation.cited ? "citation cited" : "citation");
      const open = el("button", "citation-open");
      open.type = "button";
      open.setAttribute("aria-expanded", "false");
      open.append(el("span", "citation-n", `[${citation.n}]`));
      open.append(el("span", "title", citation.title || citation.path));
      if (citation.cited) open.append(el("span", "badge", "cited"));
      card.append(open);
      card.append(el("div", "path", citation.path));
      if (citation.heading) card.append(el("div", "heading", citation.heading));
      open.addEventListener("click", () => togglePassage(card, open, citation.chunk_id));
      list.append(card);
    }
  }

  async function togglePassage(card, button, chunkId) {
    const shown = card.querySelector(".passage");
    if (shown) {
      shown.remove();
      button.setAttribute("aria-expanded", "false");
      return;
    }
    const panel = el("div", "passage", "Opening the passage…");
    card.append(panel);
    button.setAttribute("aria-expanded", "true");
    try {
      const response = await fetch(`/passages/${encodeURIComponent(chunkId)}`);
      if (!response.ok) {
        panel.textContent = await describeFailure(response);
        return;
      }
      const passage = await response.json();
      panel.textContent = passage.text;
    } catch (_) {
      panel.textContent = "Cannot reach the daemon to open this passage.";
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    search();
  });
  askBtn.addEventListener("click", () => {
    search();
    ask();
  });
  stopBtn.addEventListener("click", () => {
    if (streaming) streaming.abort();
  });
})();
