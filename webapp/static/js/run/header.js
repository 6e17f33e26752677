/* The run view's head: name, status and times, the progress bar, and the buttons that cancel,
 * resume, download and delete the run. */
import * as NAS from "../common.js";
import {RUN_NOTICE, runId, state, $id, isActive, runUrl, config, mark, setRun} from "./state.js";

const {el, api, fmt, ACTIVE, PHASES} = NAS;

// header, buttons --------------------------------------------------------------------------------

export function renderHeader() {
  const run = state.run;
  if (!run) return;
  $id("run-name").textContent = run.name;
  document.title = run.name + " \u00b7 edge-nas";
  NAS.setBadge($id("run-status"), run.status);
  $id("run-device").textContent = run.device || fmt.DASH;
  $id("run-node-item").hidden = !run.node;
  $id("run-node").textContent = run.node || "";
  renderRetries(run.retries || []);
  const times = [];
  times.push("created " + fmt.datetime(run.created_at));
  if (run.started_at) {
    const end = run.finished_at ? NAS.parseTime(run.finished_at) : (isActive() ? new Date() : null);
    const start = NAS.parseTime(run.started_at);
    if (start && end) times.push((run.finished_at ? "took " : "running for ") + fmt.duration((end - start) / 1000));
  }
  $id("run-times").textContent = times.join(" \u00b7 ");

  $id("cancel-run").disabled = !isActive();
  if (!isActive()) resetCancel();
  $id("resume-run").disabled = !run.resumable;
  $id("download-best").disabled = !run.best;
  const count = Math.max(state.samples.size, NAS.isNum(run.samples) ? run.samples : 0);
  $id("download-csv").disabled = count === 0;
  const del = $id("delete-run");
  del.disabled = isActive();
  if (del.disabled) resetDelete();

  const error = $id("run-error");
  if (run.error && !ACTIVE.includes(run.status)) {
    error.replaceChildren(el("strong", {}, (NAS.STATUS_LABELS[run.status] || run.status) + ": "),
                          el("span", {class: "pre"}, run.error));
    error.hidden = false;
  } else {
    error.hidden = true;
  }
}

// a cluster worker lost with its node: the run resumed by itself (webapp/workers/search.py, MAX_RETRIES)
function renderRetries(retries) {
  const node = $id("run-retries");
  node.hidden = retries.length === 0;
  if (node.hidden) return;
  node.textContent = "resumed " + retries.length + (retries.length === 1 ? " time" : " times")
    + " after a lost worker";
  node.title = retries.map((r) => fmt.datetime(r.time) + ": " + (r.node || "?") + ": " + r.error).join("\n");
}

// progress ---------------------------------------------------------------------------------------

export function renderProgress() {
  const run = state.run;
  if (!run) return;
  const p = state.progress || {};
  const epochs = NAS.isNum(p.epochs) ? p.epochs : NAS.isNum(run.epochs) ? run.epochs : config().epochs;
  const epoch = NAS.isNum(p.epoch) ? p.epoch : run.epoch;
  const phase = p.phase || run.phase;
  let fraction;
  if (run.status === "finished") fraction = 1;
  else if (NAS.isNum(p.fraction)) fraction = p.fraction;
  else if (NAS.isNum(epoch) && NAS.isNum(epochs) && epochs > 0 && run.status !== "queued") fraction = epoch / epochs;
  else fraction = 0;
  fraction = Math.min(1, Math.max(0, fraction));

  const bar = $id("progress-bar");
  bar.dataset.fraction = fraction.toFixed(4);
  bar.dataset.status = run.status;
  bar.setAttribute("aria-valuenow", (100 * fraction).toFixed(1));
  bar.classList.toggle("is-running", run.status === "running");
  bar.classList.toggle("is-queued", run.status === "queued");
  bar.classList.toggle("is-failed", ["failed", "cancelled", "interrupted"].includes(run.status));
  bar.querySelector(".progress-fill").style.width = (100 * fraction).toFixed(2) + "%";
  const warmup = config().warmup_epochs;
  const tick = bar.querySelector(".progress-warmup");
  if (NAS.isNum(warmup) && NAS.isNum(epochs) && warmup > 0 && warmup < epochs) {
    tick.hidden = false;
    tick.style.left = (100 * warmup / epochs).toFixed(2) + "%";
  } else {
    tick.hidden = true;
  }
  $id("progress-percent").textContent = (100 * fraction).toFixed(fraction > 0 && fraction < 0.1 ? 1 : 0) + "%";

  const phaseNode = $id("progress-phase");
  if (run.status === "queued") phaseNode.textContent = NAS.queueText(run);
  else if (run.status === "finished") phaseNode.textContent = "Done";
  else if (!phase && run.status === "running") phaseNode.textContent = "Starting\u2026";
  else if (!ACTIVE.includes(run.status)) phaseNode.textContent = NAS.STATUS_LABELS[run.status] || run.status;
  else if (p.device_wait) phaseNode.textContent = "Waiting for the device";
  else phaseNode.textContent = PHASES[phase] || (phase ? String(phase) : fmt.DASH);
  phaseNode.dataset.phase = p.device_wait && ACTIVE.includes(run.status) ? "device_wait" : phase || "";

  let epochText = "";
  if (NAS.isNum(epochs) && (run.status === "finished" || NAS.isNum(epoch))) {
    const shown = run.status === "finished" ? epochs : Math.min(epoch + 1, epochs);
    epochText = "Epoch " + shown + " / " + epochs;
  } else if (NAS.isNum(epochs)) {
    epochText = epochs + " epochs";
  }
  $id("progress-epoch").textContent = epochText;
  $id("progress-step").textContent = isActive() && NAS.isNum(p.step)
    ? "step " + p.step + (NAS.isNum(p.steps) ? " / " + p.steps : "") : "";
  $id("progress-eta").textContent = isActive() && NAS.isNum(p.eta_s) ? "ETA " + fmt.duration(p.eta_s) : "";

  const stats = [];
  if (NAS.isNum(p.loss)) stats.push("loss " + fmt.num(p.loss, 3));
  if (NAS.isNum(p.accuracy)) stats.push("train accuracy " + fmt.pct(p.accuracy, 1));
  if (NAS.isNum(p.expected_latency_ms)) stats.push("expected latency " + fmt.ms(p.expected_latency_ms));
  const wait = p.device_wait;
  if (wait && ACTIVE.includes(run.status)) {
    // the worker reports at its retries only: show when the wait began, which stays true between
    const clock = NAS.isNum(wait.since) ? new Date(wait.since * 1000).toLocaleTimeString([], {hour12: false}) : null;
    stats.splice(0, stats.length, (clock ? "no answer since " + clock : "no answer")
      + " (waiting up to " + fmt.duration(wait.limit_s) + "): " + wait.error);
  }
  $id("progress-stats").textContent = stats.join(" \u00b7 ");
  $id("run-message").textContent = state.message || "";
}

// --- buttons -----------------------------------------------------------------------------------

/** POST the run's action; its progress notice stays until the outcome's notice replaces it. */
async function action(button, path, progress) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  const notice = NAS.flash(progress, "info", 0, RUN_NOTICE);
  const seen = state.statusEvents;
  try {
    const run = await api("/runs/" + runId + path, {method: "POST"});
    // the socket may have told a newer status while the answer travelled: a resumed run's
    // "queued" must not come back over its "running"
    if (run && state.statusEvents === seen) setRun(run, {announce: true});
  } catch (e) {
    // an error is flashed by api()
  } finally {
    button.removeAttribute("aria-busy");
    if (notice) notice.remove(); // no outcome to show
    mark("header"); // the buttons per the state
  }
}

// cancel and delete cannot be undone: both ask first (a second click confirms, no blocking dialog)
const cancel = $id("cancel-run");
const resetCancel = NAS.confirmClick(cancel, "Click again to cancel",
  () => action(cancel, "/cancel", "Cancelling the run\u2026"));
$id("resume-run").addEventListener("click", (e) => {
  state.progress = null;
  action(e.currentTarget, "/resume", "Resuming the run\u2026");
});
$id("download-best").addEventListener("click", () => NAS.download(runUrl("/best.json")));
$id("download-csv").addEventListener("click", () => NAS.download(runUrl("/samples.csv")));

const del = $id("delete-run");
const resetDelete = NAS.confirmClick(del, "Click again to delete", async () => {
  del.disabled = true;
  try {
    await api("/runs/" + runId, {method: "DELETE"});
    window.location.href = NAS.root + "/";
  } catch (e) {
    mark("header");
  }
});
