// Shared by the pages: building DOM from data (never HTML from data) and reading API errors.
"use strict";

/** An element with a class and text; text is always set with textContent. */
function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

/** Show `message` in element `node`, or hide it when message is empty. */
function say(node, message) {
  node.textContent = message || "";
  node.hidden = !message;
}

/** A plain-words sentence for a failed response: the daemon's JSON error and what to do. */
async function describeFailure(response) {
  let message = "";
  try {
    const body = await response.json();
    message = body && body.error ? String(body.error) : "";
  } catch (_) {
    message = response.statusText || "";
  }
  const status = response.status;
  if (status === 503) {
    const wait = response.headers.get("Retry-After");
    const when = wait ? ` Try again in ${wait} second${wait === "1" ? "" : "s"}.` : " Try again shortly.";
    return `The daemon is busy or a backend is unavailable (${message}).${when}`;
  }
  if (status === 401 || status === 403) return `The request was refused: ${message}`;
  if (status >= 400 && status < 500) return `The request was refused: ${message}`;
  return `The daemon failed (HTTP ${status}): ${message}`;
}

function ms(value) {
  if (value === null || value === undefined || Number.isNaN(Number(value))) return "–";
  const n = Number(value);
  return n >= 1000 ? `${(n / 1000).toFixed(1)} s` : `${Math.round(n)} ms`;
}

window.ragvisor = { el, say, describeFailure, ms };
