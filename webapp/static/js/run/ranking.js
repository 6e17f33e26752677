/* The run view's ranking check: the form that retrains architectures spread across the run's
 * samples, and the latest check's answer: shared-weight against test accuracy as a scatter,
 * Kendall's tau with its p-value, where the pick stands, the retrainings' cost, and its CSV. Its
 * retrainings are the run's (trainings.js lists them); each change of one refetches the checks. */
import * as NAS from "../common.js";
import {$id, hasPlotly, mark, runId, showErrors, state} from "./state.js";

const {api, fmt} = NAS;

export function setChecks(checks) {
  if (Array.isArray(checks)) state.rankingChecks = checks;
  mark("ranking");
}

/** A retraining of a check changed: the check's answer did too. */
export const refreshChecks = NAS.debounce(async () => {
  try { setChecks(await api("/runs/" + runId + "/ranking_checks", {quiet: true})); } catch (e) { /* next event */ }
}, 500);

let formReady = false;

async function fillForm() {
  formReady = true;
  try {
    const defaults = await api("/defaults", {quiet: true});
    const check = defaults.ranking_check;
    Object.assign($id("ranking-architectures"), {value: check.architectures, min: check.min, max: check.max});
  } catch (e) { /* the server says what is wrong when it is sent */ }
  renderRanking();
}

const ordinal = (n) => n + (n % 10 === 1 && n % 100 !== 11 ? "st" : n % 10 === 2 && n % 100 !== 12 ? "nd"
  : n % 10 === 3 && n % 100 !== 13 ? "rd" : "th");

function summary(check) {
  const parts = [];
  if (NAS.isNum(check.kendall_tau)) {
    parts.push("Kendall's tau " + fmt.num(check.kendall_tau, 2) + " (p = " + fmt.num(check.p_value, 3)
               + ") over " + check.retrained + " retrained architectures.");
  } else {
    parts.push(check.retrained + " of " + check.points.length + " architectures retrained"
               + (check.active ? "; the answer comes with the third." : ": too few, or one ranking is flat."));
  }
  if (NAS.isNum(check.pick_rank)) {
    parts.push("The pick ranks " + ordinal(check.pick_rank) + " by test accuracy, "
               + ordinal(check.pick_shared_rank) + " by shared-weight accuracy.");
  }
  parts.push(fmt.duration(check.train_time_s) + " of training" + (check.active ? " so far." : "."));
  return parts.join(" ");
}

function renderPlot(check) {
  const node = $id("ranking-plot");
  const done = check.points.filter((p) => NAS.isNum(p.test_accuracy) && NAS.isNum(p.shared_weight_accuracy));
  node.dataset.points = String(done.length);
  node.hidden = !done.length;
  if (!hasPlotly || !done.length) return;
  const trace = (points, name, marker) => ({
    type: "scatter", mode: "markers", name,
    x: points.map((p) => 100 * p.shared_weight_accuracy), y: points.map((p) => 100 * p.test_accuracy),
    customdata: points.map((p) => ["#" + p.number]),
    hovertemplate: "<b>sample %{customdata[0]}</b><br>shared-weight %{x:.2f}% \u00b7 test %{y:.2f}%<extra></extra>",
    marker});
  const traces = [trace(done.filter((p) => !p.pick), "retrained", {size: 9, color: "#6366f1"})];
  const pick = done.filter((p) => p.pick);
  if (pick.length) traces.push(trace(pick, "the pick", {symbol: "star", size: 16, color: "#facc15", line: {width: 1.5, color: "#854d0e"}}));
  Plotly.react(node, traces, NAS.scatterLayout({
    margin: {t: 12}, xaxis: {title: {text: "shared-weight validation accuracy (%)"}},
    yaxis: {title: {text: "retrained test accuracy (%)"}}, uirevision: "ranking"}), NAS.PLOT_CONFIG);
}

export function renderRanking() {
  if (!formReady && state.run) fillForm();
  const finished = state.run && state.run.status === "finished";
  $id("ranking-submit").disabled = !finished || !formReady;
  const check = state.rankingChecks[state.rankingChecks.length - 1];
  $id("ranking-summary").hidden = !check;
  $id("ranking-csv").hidden = !check;
  if (!check) return;
  $id("ranking-summary").textContent = summary(check);
  $id("ranking-summary").dataset.tau = NAS.isNum(check.kendall_tau) ? String(check.kendall_tau) : "";
  $id("ranking-csv").href = NAS.apiUrl("/ranking_checks/" + check.id + ".csv");
  renderPlot(check);
}

$id("ranking-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const error = $id("ranking-error");
  error.hidden = true;
  const body = {};
  for (const key of ["architectures", "epochs"]) {
    const raw = $id("ranking-" + key).value.trim();
    if (raw !== "") body[key] = Number(raw);
  }
  $id("ranking-submit").disabled = true;
  try {
    const check = await api("/runs/" + runId + "/ranking_checks", {method: "POST", body});
    setChecks(state.rankingChecks.concat([check]));
    NAS.flash("Retraining " + check.points.length + " architectures to check the ranking.", "info", 3000);
  } catch (e) {
    showErrors(error, e);
  } finally {
    renderRanking();
  }
});
