/* The run view's state: what was fetched and pushed, what is derived from it, the updates that
 * change it, and the render scheduler that redraws the parts they touch (once per frame). */
import * as NAS from "../common.js";

const {fmt, ACTIVE} = NAS;
const page = document.getElementById("run-page");
export const runId = Number(page.dataset.runId);
export const hasPlotly = typeof window.Plotly === "object" && window.Plotly !== null;
export const POLL_MS = 5000;
export const RUN_NOTICE = "run-status"; // the key of the run's status notices: one at a time

export const state = {
  run: null,
  samples: new Map(), // id -> sample
  metrics: new Map(), // epoch -> metric
  progress: null,
  message: null,
  loaded: false,
  live: false,
  queue: [], // events received before the first fetch completed
  front: [], // Pareto front (samples), latency ascending
  frontIds: new Set(), // the server's front: fetched once, then kept by the pushed deltas
  heatmapEpoch: null, // null: follow the latest epoch
  reference: null, // MobileNetV2 evaluated like a sample: the reference point in the scatter
  trainings: new Map(), // id -> retraining of one of the run's architectures
  retrainPick: null, // the sample the user chose to retrain from the samples table
  specialisations: new Map(), // id -> a pick of the trained supernet for another target or device
  rankingChecks: [], // the run's ranking checks, oldest first (the page shows the latest)
  crossTable: null, // each pick measured on every device and runtime of the run's picks
  statusEvents: 0, // run_status events seen: a button's answer older than one is not applied
};

// --- helpers -----------------------------------------------------------------------------------

export const $id = (id) => document.getElementById(id);
export const isActive = () => state.run && ACTIVE.includes(state.run.status);
export const runUrl = (suffix) => NAS.apiUrl("/runs/" + runId + (suffix || ""));
export const archUrl = (sampleId) => runUrl("/samples/" + sampleId + "/arch.json");
/** The settings the run searched with: as asked, with what its worker resolved (the automatic T,
 * the device's address) over them; `requested()`: as asked. */
export const requested = () => (state.run && state.run.config) || {};
export const config = () => NAS.runSettings(state.run);
export const hasPoint = (s) => NAS.isNum(s.latency_ms) && NAS.isNum(s.accuracy);
/** "#3": a sample's number within its run (ids count across all runs); by id, its stored copy's. */
export function sampleLabel(sampleOrId) {
  const id = typeof sampleOrId === "object" ? sampleOrId.id : sampleOrId;
  const known = state.samples.get(id);
  const number = (known && known.number) || (typeof sampleOrId === "object" && sampleOrId.number);
  return "#" + (NAS.isNum(number) ? number : id);
}

/** A refused form's field errors in its one error line ("epochs: must be ...; seed: ..."). */
export function showErrors(box, error) {
  if (!error || !error.errors) return;
  box.textContent = Object.entries(error.errors).map(([k, v]) => k + ": " + v).join("; ");
  box.hidden = false;
}

/** The server's front as samples, latency ascending (ids whose sample is not here yet wait). */
export function frontSamples() {
  return Array.from(state.frontIds).map((id) => state.samples.get(id)).filter((s) => s && hasPoint(s))
    .sort((a, b) => a.latency_ms - b.latency_ms || a.id - b.id);
}

/** A sample event's change of the front: {added: [ids], removed: [ids]}. */
export function applyFrontDelta(delta) {
  for (const id of (delta && delta.removed) || []) state.frontIds.delete(id);
  for (const id of (delta && delta.added) || []) state.frontIds.add(id);
}

export function sortedSamples() {
  return Array.from(state.samples.values()).sort((a, b) => a.id - b.id);
}

export function maxSampleId() {
  let max = 0;
  for (const id of state.samples.keys()) if (id > max) max = id;
  return max;
}

/**
 * The best sample: the server's call (search_core/best.py, the search's own rule), which keeps
 * run.best current while the run goes on (the run is refetched after samples); provisional until
 * the run ends. Its full figures come from the loaded samples.
 */
export function bestSample() {
  const best = state.run && state.run.best;
  if (!best) return null;
  return Object.assign({}, state.samples.get(best.id) || {}, best, {provisional: isActive()});
}

// --- rendering, coalesced per animation frame ----------------------------------------------------

const dirty = new Set();
const flush = NAS.throttleFrame(() => {
  const parts = Array.from(dirty);
  dirty.clear();
  for (const part of parts) {
    try { RENDER[part](); } catch (e) { console.error("render " + part, e); }
  }
});
export function mark(...parts) { parts.forEach((p) => dirty.add(p)); flush(); }
export const ALL = ["header", "progress", "scatter", "curves", "heatmap", "best", "table", "config",
                    "trainings", "specialisations", "ranking", "crossTable"];

const RENDER = {}; // part -> function, given by the modules that draw them (main.js)
export function registerRenderers(parts) { Object.assign(RENDER, parts); }

// --- state updates -----------------------------------------------------------------------------

export function setRun(run, {announce = false} = {}) {
  const previous = state.run;
  if (previous && !ACTIVE.includes(previous.status) && ACTIVE.includes(run.status)) {
    state.progress = null; // resumed: a new worker, new progress
  }
  state.run = Object.assign({}, previous || {}, run);
  if (run.progress && isNewer(run.progress, state.progress)) state.progress = run.progress;
  if (run.message !== undefined && run.message !== null) state.message = run.message;
  if (run.reference) state.reference = run.reference;
  if (announce && previous && previous.status !== run.status) announceStatus(state.run);
  mark(...ALL);
}

/** A stored progress snapshot (from a fetch) must not replace a newer one from the socket. */
export function isNewer(incoming, current) {
  if (!current) return true;
  if (NAS.isNum(incoming.fraction) && NAS.isNum(current.fraction)) return incoming.fraction >= current.fraction;
  const key = (p) => [NAS.isNum(p.epoch) ? p.epoch : -1, NAS.isNum(p.step) ? p.step : -1];
  const [a, b] = [key(incoming), key(current)];
  return a[0] > b[0] || (a[0] === b[0] && a[1] >= b[1]);
}

function announceStatus(run) {
  const best = run.best;
  const say = (text, kind, timeoutMs) => NAS.flash(text, kind, timeoutMs, RUN_NOTICE);
  if (run.status === "finished") {
    say("Search finished" + (best ? ": best " + fmt.pct(best.accuracy) + " at " + fmt.ms(best.latency_ms) : "."), "success");
  } else if (run.status === "failed") {
    say("The run failed" + (run.error ? ": " + run.error : "."));
  } else if (run.status === "cancelled") {
    say("The run was cancelled.", "info");
  } else if (run.status === "interrupted") {
    say("The run was interrupted" + (run.resumable ? "; it can be resumed." : "."), "info");
  } else if (run.status === "running") {
    say("The run started.", "info", 3000);
  } else if (run.status === "queued") {
    say("The run is queued.", "info", 3000);
  }
}

export function addSamples(samples) {
  let added = 0;
  for (const s of samples || []) {
    if (!s || !NAS.isNum(s.id)) continue;
    if (!state.samples.has(s.id)) added += 1;
    state.samples.set(s.id, Object.assign(state.samples.get(s.id) || {}, s));
  }
  state.front = frontSamples();
  mark("scatter", "table", "best", "header");
  return added;
}

export function addMetrics(metrics) {
  for (const m of metrics || []) if (m && NAS.isNum(m.epoch)) state.metrics.set(m.epoch, m);
  mark("curves", "heatmap");
}
