/* Run view (/runs/<id>), the entry module: progress, the accuracy-vs-latency scatter with its
 * Pareto front, training curves, the op-probability heatmap, the best architecture and the samples
 * table, all kept live over Socket.IO (polling while the socket is down). The parts are drawn by
 * header.js, charts.js and details.js from the state in state.js; this module feeds that state.
 *
 * Order of operations (so that no event is lost): subscribe to the run's room first, then fetch;
 * events that arrive before the fetch completes are queued and replayed on top of it. Samples are
 * de-duplicated by id, epoch metrics by epoch. After a reconnect the page fetches what it missed.
 */

import * as NAS from "../common.js";
import {ALL, POLL_MS, addMetrics, addSamples, applyFrontDelta, hasPlotly, isActive, isNewer, mark,
        maxSampleId, registerRenderers, runId, setRun, state} from "./state.js";
import {renderHeader, renderProgress} from "./header.js";
import {renderScatter, renderCurves, renderHeatmap} from "./charts.js";
import {buildHead, renderBest, renderConfig, renderTable} from "./details.js";
import {addTrainings, renderTrainings} from "./trainings.js";
import {addSpecialisations, renderSpecialisations} from "./specialisations.js";
import {refreshChecks, renderRanking, setChecks} from "./ranking.js";
import {refreshCrossTable, renderCrossTable, setCrossTable} from "./cross_devices.js";

const {api} = NAS;

if (!hasPlotly) NAS.flash("The charting library did not load: charts are unavailable.");

registerRenderers({
  header: renderHeader, progress: renderProgress, scatter: renderScatter, curves: renderCurves,
  heatmap: renderHeatmap, best: renderBest, table: renderTable, config: renderConfig,
  trainings: renderTrainings, specialisations: renderSpecialisations, ranking: renderRanking,
  crossTable: renderCrossTable,
});

// the best sample is the server's call (search_core/best.py): refetch the run after samples
const refreshRun = NAS.debounce(async () => {
  try { setRun(await api("/runs/" + runId, {quiet: true})); } catch (e) { /* next event or poll */ }
}, 800);

const HANDLERS = {
  run_progress(data) {
    if (!isNewer(data, state.progress)) return;
    state.progress = data;
    if (state.run) {
      if (NAS.isNum(data.epoch)) state.run.epoch = data.epoch;
      if (data.phase) state.run.phase = data.phase;
      if (NAS.isNum(data.epochs)) state.run.epochs = data.epochs;
    }
    mark("progress");
  },
  sample(data) {
    applyFrontDelta(data.pareto);
    if (data.sample) addSamples([data.sample]);
    refreshRun();
  },
  run_epoch(data) {
    if (data.metric) addMetrics([data.metric]);
  },
  run_reference(data) {
    state.reference = data.reference;
    mark("scatter");
  },
  training(data) {
    addTrainings([data.training]);
    if (data.training && NAS.isNum(data.training.ranking_check_id)) refreshChecks();
  },
  specialisation(data) {
    addSpecialisations([data.specialisation]);
    if (data.specialisation && data.specialisation.status === "finished") refreshCrossTable(); // a new row
  },
  cross_table(data) {
    setCrossTable(data.table);
  },
  run_message(data) {
    state.message = data.text;
    mark("progress");
  },
  run_status(data) {
    if (!data.run) return;
    state.statusEvents += 1;
    const wasActive = isActive();
    setRun(data.run, {announce: true});
    if (wasActive && !isActive()) resync(); // the final samples and metrics
  },
};

function onEvent(name, data) {
  if (!data || Number(data.run_id) !== runId) return;
  if (!state.loaded) { state.queue.push([name, data]); return; }
  HANDLERS[name](data);
}

// --- loading -----------------------------------------------------------------------------------

/** The run, its samples and its metrics; a failed part is flashed (unless quiet) and skipped. */
async function fetchParts(afterId, quiet) {
  const [run, samples, metrics, front, trainings, specialisations, checks, cross] = await Promise.allSettled([
    api("/runs/" + runId, {quiet}),
    NAS.runSamples(runId, afterId, {quiet}),
    api("/runs/" + runId + "/metrics", {quiet}),
    api("/runs/" + runId + "/pareto", {quiet}),
    api("/runs/" + runId + "/trainings", {quiet}),
    api("/runs/" + runId + "/specialisations", {quiet}),
    api("/runs/" + runId + "/ranking_checks", {quiet}),
    api("/runs/" + runId + "/cross_table", {quiet}),
  ]);
  if (run.status === "fulfilled" && run.value) setRun(run.value, {announce: state.loaded});
  if (front.status === "fulfilled" && Array.isArray(front.value)) {
    state.frontIds = new Set(front.value.map((s) => s.id));
  }
  if (samples.status === "fulfilled") addSamples(samples.value);
  if (metrics.status === "fulfilled") addMetrics(metrics.value);
  if (trainings.status === "fulfilled") addTrainings(trainings.value);
  if (specialisations.status === "fulfilled") addSpecialisations(specialisations.value);
  if (checks.status === "fulfilled") setChecks(checks.value);
  if (cross.status === "fulfilled") setCrossTable(cross.value);
  if (run.status === "rejected" && run.reason && run.reason.status === 404 && state.loaded) {
    NAS.flash("This run no longer exists.");
  }
}

async function loadAll() {
  try {
    await fetchParts(0, false);
  } finally {
    state.loaded = true;
    for (const [name, data] of state.queue.splice(0)) {
      try { HANDLERS[name](data); } catch (e) { console.error(name, e); }
    }
    mark(...ALL);
  }
}

let resyncing = false;
async function resync() {
  if (resyncing || !state.loaded) return;
  resyncing = true;
  try {
    await fetchParts(maxSampleId(), true);
  } finally {
    resyncing = false;
  }
}

// --- start -------------------------------------------------------------------------------------

buildHead();
mark(...ALL);

const socket = NAS.getSocket();
let subscribed;
if (socket) {
  for (const name of Object.keys(HANDLERS)) socket.on(name, (data) => onEvent(name, data));
  subscribed = new Promise((resolve) => {
    socket.on("connect", async () => {
      const ack = await NAS.emitAck(socket, "subscribe", {run_id: runId});
      state.live = !!ack.ok;
      if (!ack.ok) NAS.flash("Live updates unavailable: " + (ack.error || "subscribe failed"));
      resolve();
      resync(); // after a reconnect: what was missed (no-op before the first load)
    });
    socket.on("disconnect", () => { state.live = false; });
  });
} else {
  subscribed = Promise.resolve();
}

// subscribe first (bounded wait: without Socket.IO the page still loads and polls)
Promise.race([subscribed, new Promise((r) => setTimeout(r, 3000))])
  .then(loadAll);

// fallback while the socket is down: poll an active run
setInterval(() => {
  if (!state.live && state.loaded && isActive() && !document.hidden) resync();
}, POLL_MS);
// the "running for" clock
setInterval(() => { if (isActive()) mark("header"); }, 15000);

window.NAS_PAGE = {state, resync};
