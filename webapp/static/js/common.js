/* edge-nas dashboard: helpers shared by every page (no framework, no build step).
 *
 * An ES module, imported by every page's module as `import * as NAS from "./common.js"`: JSON fetch
 * helpers that report errors in the flash area, number formatting, DOM building, status badges
 * and the Socket.IO connection.
 */

const root = (document.body && document.body.dataset.root) || "";

// --- DOM ---------------------------------------------------------------------------------------

/** el("div", {class: "x", dataset: {id: 3}, onclick: f}, "text", child, [more, children]) */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "style" && typeof value === "object") Object.assign(node.style, value);
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, value);
  }
  appendChildren(node, children);
  return node;
}

function appendChildren(node, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) appendChildren(node, child);
    else node.append(child instanceof Node ? child : String(child));
  }
}

const $ = (selector, scope) => (scope || document).querySelector(selector);
const $$ = (selector, scope) => Array.from((scope || document).querySelectorAll(selector));

// --- flash messages ----------------------------------------------------------------------------

/**
 * Show a message in the flash area. kind: "error" | "success" | "info". timeout_ms 0 = stays.
 * key: a later message with the same key replaces this one (a progress notice and its outcome).
 */
function flash(message, kind = "error", timeoutMs, key) {
  const area = document.getElementById("flash");
  if (!area) { console.warn(message); return null; }
  const item = el("div", {class: "flash flash-" + kind, role: kind === "error" ? "alert" : "status",
                          "data-testid": "flash-" + kind, dataset: key ? {key} : null},
    el("span", {class: "flash-text"}, message),
    el("button", {type: "button", class: "flash-close", "aria-label": "Dismiss",
                  onclick: () => item.remove()}, "\u00d7"));
  // the same message twice in a row (e.g. a poll failing every 5 s): refresh it, don't stack
  for (const old of area.querySelectorAll(".flash")) {
    if (old.querySelector(".flash-text").textContent === message || (key && old.dataset.key === key)) old.remove();
  }
  area.append(item);
  const timeout = timeoutMs === undefined ? (kind === "error" ? 0 : 5000) : timeoutMs;
  if (timeout > 0) setTimeout(() => item.remove(), timeout);
  return item;
}

function clearFlash() {
  const area = document.getElementById("flash");
  if (area) area.replaceChildren();
}

/**
 * A button whose action cannot be undone asks first: its first click turns it into `prompt`
 * ("Click again to delete"), a second click within 4 s calls `onConfirm`; Escape, leaving the
 * button or the 4 s running out dismiss it. Returns reset(), for when the button stops applying.
 */
function confirmClick(button, prompt, onConfirm) {
  const label = button.textContent;
  let timer = null;
  function reset() {
    clearTimeout(timer);
    button.classList.remove("is-confirming");
    button.dataset.confirm = "";
    button.textContent = label;
  }
  button.addEventListener("click", () => {
    if (button.dataset.confirm === "1") { reset(); onConfirm(); return; }
    button.dataset.confirm = "1";
    button.classList.add("is-confirming");
    button.textContent = prompt;
    timer = setTimeout(reset, 4000);
  });
  button.addEventListener("keydown", (e) => { if (e.key === "Escape") reset(); });
  button.addEventListener("blur", reset);
  return reset;
}

// --- JSON API ----------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body, url) {
    super(ApiError.describe(status, body, url));
    this.status = status;
    this.body = body;
    this.url = url;
    this.errors = body && typeof body.errors === "object" ? body.errors : null;
  }

  static describe(status, body, url) {
    if (body && typeof body.error === "string") return body.error;
    if (body && body.errors && typeof body.errors === "object") {
      return Object.entries(body.errors).map(([k, v]) => k + ": " + v).join("; ");
    }
    if (status === 0) return "Could not reach the server (" + url + ")";
    return "Request failed: HTTP " + status + " (" + url + ")";
  }
}

function apiUrl(path) {
  return root + "/api" + (path.startsWith("/") ? path : "/" + path);
}

/**
 * Call the JSON API. path is relative to /api ("/runs/3"). Options: method, body (JSON-encoded),
 * quiet (don't flash errors), flash400 (flash validation errors too; off by default, forms show
 * them beside their fields). Resolves to the parsed JSON (null for 204); rejects with ApiError.
 */
async function api(path, options = {}) {
  const url = apiUrl(path);
  const init = {method: options.method || "GET", headers: {Accept: "application/json"}};
  if (options.body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(options.body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (e) {
    const error = new ApiError(0, null, url);
    if (!options.quiet) flash(error.message);
    throw error;
  }
  if (response.status === 401) {  // the session ended (logged out, or a new token): log in again
    window.location.assign(root + "/login?next=" + encodeURIComponent(location.pathname + location.search));
  }
  if (response.status === 204) return null;
  let body = null;
  const text = await response.text();
  if (text) {
    try { body = JSON.parse(text); } catch (e) { body = null; }
  }
  if (!response.ok) {
    const error = new ApiError(response.status, body, url);
    const isValidation = response.status === 400 && error.errors;
    if (!options.quiet && (!isValidation || options.flash400)) flash(error.message);
    throw error;
  }
  return body;
}

const SAMPLES_PAGE = 1000;  // at most the server's page (api.SAMPLES_PAGE)

/** A run's samples after the sample id afterId (all for 0), fetched a page at a time. */
async function runSamples(runId, afterId = 0, options = {}) {
  const samples = [];
  for (;;) {
    const page = await api("/runs/" + runId + "/samples?limit=" + SAMPLES_PAGE +
                           (afterId ? "&after=" + afterId : ""), options);
    samples.push(...page);
    if (page.length < SAMPLES_PAGE) return samples;
    afterId = page[page.length - 1].id;
  }
}

/** Download a URL (an attachment) without leaving the page. */
function download(url) {
  const a = el("a", {href: url, download: "", style: {display: "none"}});
  document.body.append(a);
  a.click();
  a.remove();
}

// --- formatting --------------------------------------------------------------------------------

const DASH = "\u2014";
const isNum = (v) => typeof v === "number" && Number.isFinite(v);

/** 0.9861 -> "98.61%" */
function pct(fraction, digits = 2) {
  return isNum(fraction) ? (fraction * 100).toFixed(digits) + "%" : DASH;
}

/** Text that Plotly draws as it is: its labels read tags (<a>, <b>, <span style>) and entities. */
function plotText(text) {
  return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** 1.5432 -> "1.54 ms"; 123.4 -> "123 ms" */
function ms(value) {
  return isNum(value) ? value.toFixed(msDigits(value)) + " ms" : DASH;
}

const msDigits = (value) => (Math.abs(value) >= 100 ? 0 : Math.abs(value) >= 10 ? 1 : 2);

/**
 * A latency shown beside its target T: with the digits it takes to tell them apart when they
 * round alike (4.8904 vs 4.89: "4.8904 ms"), so that a sample over T never reads as T.
 */
function msVersus(value, target) {
  if (!isNum(value) || !isNum(target)) return ms(value);
  for (let digits = msDigits(value); digits <= msDigits(value) + 3; digits += 1) {
    if (value.toFixed(digits) !== target.toFixed(digits)) return value.toFixed(digits) + " ms";
  }
  return ms(value);
}

/** A count in millions: 1234567 -> "1.23 M" */
function millions(value, digits = 2) {
  return isNum(value) ? (value / 1e6).toFixed(digits) + " M" : DASH;
}

const params = (value) => millions(value, 2);
const macs = (value) => millions(value, 1);

function mb(value) {
  return isNum(value) ? value.toFixed(value >= 100 ? 0 : value >= 10 ? 1 : 2) + " MB" : DASH;
}

function num(value, digits = 3) {
  return isNum(value) ? value.toFixed(digits) : DASH;
}

/** seconds -> "1 h 02 min", "3 min 05 s", "12 s" */
function duration(seconds) {
  if (!isNum(seconds) || seconds < 0) return DASH;
  const s = Math.round(seconds);
  if (s < 60) return s + " s";
  const m = Math.floor(s / 60);
  if (m < 60) return m + " min " + String(s % 60).padStart(2, "0") + " s";
  return Math.floor(m / 60) + " h " + String(m % 60).padStart(2, "0") + " min";
}

function parseTime(iso) {
  if (!iso) return null;
  // ISO strings without an offset are UTC (the server stores UTC)
  const hasZone = /[zZ]|[+-]\d\d:?\d\d$/.test(iso);
  const date = new Date(hasZone ? iso : iso + "Z");
  return Number.isNaN(date.getTime()) ? null : date;
}

/** ISO time -> "2024-05-01 14:03" in the browser's time zone */
function datetime(iso) {
  const d = parseTime(iso);
  if (!d) return DASH;
  const p = (n) => String(n).padStart(2, "0");
  return d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate()) + " "
    + p(d.getHours()) + ":" + p(d.getMinutes());
}

/** ISO time -> "5 min ago" */
function ago(iso) {
  const d = parseTime(iso);
  if (!d) return DASH;
  const s = (Date.now() - d.getTime()) / 1000;
  if (s < 45) return "just now";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  if (s < 86400) return Math.round(s / 3600) + " h ago";
  return datetime(iso);
}

// --- statuses, ops -----------------------------------------------------------------------------

// what the server declares once (webapp/pages.py, server_facts): the statuses of a run or a
// retraining that is not over, the searchable ops in the space's order, the blocks per stage
const FACTS = JSON.parse(document.getElementById("server-facts").textContent);
const ACTIVE = FACTS.active;
const STATUS_LABELS = {
  queued: "Queued", running: "Running", finished: "Finished", failed: "Failed",
  cancelled: "Cancelled", interrupted: "Interrupted", online: "Online", offline: "Offline",
  unknown: "Unknown", checking: "Checking", profiling: "Profiling",
};

function badge(status, attrs = {}) {
  const s = status || "unknown";
  return el("span", Object.assign({class: "badge badge-" + s, dataset: {status: s}},
                                  attrs), STATUS_LABELS[s] || s);
}

/** Replace an existing badge element in place (keeps its id / data-testid). */
function setBadge(node, status) {
  const s = status || "unknown";
  node.className = "badge badge-" + s;
  node.dataset.status = s;
  node.textContent = STATUS_LABELS[s] || s;
}

const PHASES = {warmup: "Warm-up", search: "Search"};

/** Where a queued run stands: "Queued: next", "Queued: 2 ahead". */
/** The settings a run searched with: as asked (`config`), with what its worker resolved over
 * them (`resolved`: the automatic T, the device's address). */
const runSettings = (run) => Object.assign({}, run && run.config, run && run.resolved);

function queueText(run) {
  const position = run.queue_position;
  if (!isNum(position)) return "Queued";
  return "Queued: " + (position === 1 ? "next to start" : (position - 1) + " ahead");
}

/** The searchable ops, the column order of the probability heatmap. */
const OPS = FACTS.ops;
/** The index of each stage's first block: [0, 4, 8, 12, 16] for five stages of four. */
const STAGE_STARTS = FACTS.stage_blocks.reduce(
  (starts, n) => starts.concat([starts[starts.length - 1] + n]), [0]).slice(0, -1);

/** "k5_e6" -> {kernel: 5, expansion: 6, zero: false}; "zero" -> {zero: true} */
function parseOp(op) {
  const m = /^k(\d+)_e(\d+)$/.exec(op || "");
  if (!m) return {zero: op === "zero", kernel: null, expansion: null};
  return {zero: false, kernel: Number(m[1]), expansion: Number(m[2])};
}

/** ["k3_e6", "zero", ...] -> "k3e6 skip k5e3 k7e6 · ..." (stages separated by a middle dot) */
function opsCompact(ops) {
  if (!Array.isArray(ops) || !ops.length) return DASH;
  const parts = [];
  ops.forEach((op, i) => {
    if (i > 0 && STAGE_STARTS.includes(i)) parts.push("\u00b7");
    parts.push(op === "zero" ? "skip" : String(op).replace("_", ""));
  });
  return parts.join(" ");
}

/** A sample's hover in every chart (Plotly draws it as HTML, so `head`, `latency`, `note` and
 * `lines` come as HTML, any user text in them escaped by plotText): the head line, accuracy and
 * latency (then `note`), further lines, size, and the ops in two lines (stages 1-3, 4-5). Traces
 * show it with `hovertext` and SAMPLE_HOVER. */
function sampleHover(s, {head, latency, note = "", lines = []}) {
  const ops = Array.isArray(s.ops) && s.ops.length
    ? opsCompact(s.ops.slice(0, STAGE_STARTS[3]))
      + (s.ops.length > STAGE_STARTS[3] ? " \u00b7<br>" + opsCompact(s.ops.slice(STAGE_STARTS[3])) : "")
    : DASH;
  return [head, "accuracy <b>" + pct(s.accuracy) + "</b> \u00b7 latency <b>" + latency + "</b>" + note,
          ...lines,
          "params " + params(s.params) + " \u00b7 MACs " + macs(s.macs) + " \u00b7 memory " + mb(s.memory_mb),
          "<span style=\"font-family:monospace\">" + ops + "</span>"].join("<br>");
}
const SAMPLE_HOVER = "%{hovertext}<extra></extra>";

// --- Socket.IO ---------------------------------------------------------------------------------

let socket = null;

/** The page's Socket.IO connection (null when the client library is missing). */
function getSocket() {
  if (socket) return socket;
  if (typeof window.io !== "function") {
    setConnection("off");
    return null;
  }
  socket = window.io({path: root + "/socket.io"});
  setConnection("connecting");
  socket.on("connect", () => setConnection("live"));
  socket.on("disconnect", () => setConnection("connecting"));
  socket.on("connect_error", () => setConnection("off"));
  return socket;
}

function setConnection(state) {
  const node = document.getElementById("conn-status");
  if (!node) return;
  node.hidden = false;
  node.dataset.state = state;
  node.textContent = {live: "Live", connecting: "Connecting\u2026", off: "Offline"}[state] || state;
  node.title = {live: "Receiving live updates", connecting: "Connecting to the live update stream",
                off: "No live updates: the page refreshes by polling"}[state] || "";
}

/** Emit with an ack, resolving to the ack's payload (or {ok: false} after timeoutMs). */
function emitAck(sock, event, payload, timeoutMs = 5000) {
  return new Promise((resolve) => {
    let done = false;
    const timer = setTimeout(() => { if (!done) { done = true; resolve({ok: false, error: "timeout"}); } },
                             timeoutMs);
    sock.emit(event, payload, (reply) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve(reply || {ok: true});
    });
  });
}

// --- misc --------------------------------------------------------------------------------------

/** Coalesce calls into one per animation frame. */
function throttleFrame(fn) {
  let pending = false;
  return () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; fn(); });
  };
}

function debounce(fn, waitMs) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), waitMs);
  };
}

/** Plotly config used by every chart: no logo, no cloud links, resizes with its container. */
const PLOT_CONFIG = {displaylogo: false, responsive: true, showLink: false, showSendToCloud: false,
                     modeBarButtonsToRemove: ["lasso2d", "select2d", "autoScale2d"]};

const PLOT_FONT = {family: "Inter, system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
                   size: 12, color: "#1f2430"};

/**
 * The layout of an accuracy-vs-latency scatter (the run page's and the compare page's), with
 * `extra` merged over it (its `margin` and `legend` merged key by key).
 */
function scatterLayout(extra) {
  const base = {
    font: PLOT_FONT, margin: {l: 56, r: 16, t: 16, b: 48}, hovermode: "closest",
    paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "#ffffff",
    xaxis: {title: {text: "measured latency (ms)"}, gridcolor: "#eef0f3", zeroline: false, rangemode: "tozero"},
    yaxis: {title: {text: "accuracy (%)"}, gridcolor: "#eef0f3", zeroline: false},
    legend: {orientation: "h", x: 0, y: -0.18},
    hoverlabel: {align: "left", font: {size: 11}},
  };
  return Object.assign(base, extra, {margin: Object.assign(base.margin, extra.margin),
                                     legend: Object.assign(base.legend, extra.legend)});
}

const RUN_COLORS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#db2777", "#0891b2",
                    "#65a30d", "#4b5563", "#b45309"];

/**
 * A form's field errors: `clear()`, and `show({field: message})` under each `.field` that
 * `fieldFor(key)` finds; the others are listed in `box` (after `heading`, if given). Returns the
 * number of errors shown.
 */
function fieldErrors(form, box, fieldFor, heading) {
  function clear() {
    for (const p of $$(".field-error", form)) { p.hidden = true; p.textContent = ""; }
    for (const f of $$(".field.has-error", form)) f.classList.remove("has-error");
    for (const i of $$("[aria-invalid]", form)) i.removeAttribute("aria-invalid");
    box.hidden = true;
    box.replaceChildren();
  }
  function show(errors) {
    const orphans = [];
    let first = null;
    for (const [key, message] of Object.entries(errors)) {
      const field = fieldFor(key);
      if (!field || field.hidden) { orphans.push([key, message]); continue; }
      field.classList.add("has-error");
      const p = field.querySelector(".field-error");
      p.textContent = String(message);
      p.hidden = false;
      const control = field.querySelector("input, select");
      if (control) control.setAttribute("aria-invalid", "true");
      const details = field.closest("details");
      if (details) details.open = true;
      if (!first) first = control;
    }
    if (orphans.length) {
      box.replaceChildren(heading ? el("strong", {}, heading) : "",
        el("ul", {}, orphans.map(([k, m]) => el("li", {dataset: {field: k}}, el("code", {}, k), ": " + m))));
      box.hidden = false;
      if (!first) box.scrollIntoView({block: "nearest"});
    }
    if (first) first.focus();
    return Object.keys(errors).length;
  }
  return {clear, show};
}

const fmt = {pct, ms, msVersus, params, macs, mb, num, duration, datetime, ago, millions, DASH};

export {
  root, el, $, $$, flash, clearFlash, confirmClick, api, apiUrl, ApiError, runSamples, download,
  plotText, fmt, isNum, parseTime, badge, setBadge, ACTIVE, PHASES, STATUS_LABELS, OPS, STAGE_STARTS,
  queueText, runSettings, parseOp, opsCompact, getSocket, emitAck, setConnection, throttleFrame, debounce, fieldErrors,
  PLOT_CONFIG, PLOT_FONT, RUN_COLORS, scatterLayout, sampleHover, SAMPLE_HOVER,
};
