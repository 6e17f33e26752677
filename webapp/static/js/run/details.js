/* The run view's details: the best architecture drawn as a row of blocks, the run's settings, and
 * the sortable samples table. */
import * as NAS from "../common.js";
import {state, $id, archUrl, config, requested, sortedSamples, bestSample, mark, sampleLabel} from "./state.js";
import {pickSample, retrained} from "./trainings.js";

const {el, fmt, ACTIVE, STAGE_STARTS} = NAS;

function opBox(op, index) {
  const p = NAS.parseOp(op);
  const cls = ["op-box"];
  let label;
  if (p.zero) { cls.push("op-zero"); label = [el("span", {}, "skip")]; }
  else if (p.kernel) {
    cls.push("op-k" + p.kernel, "op-e" + p.expansion);
    label = [el("span", {}, "k" + p.kernel), el("span", {}, "e" + p.expansion)];
  } else { cls.push("op-unknown"); label = [el("span", {}, op || "?")]; }
  return el("div", {class: cls.join(" "), title: "block " + (index + 1) + ": " + (p.zero ? "skipped (zero)" : op),
                    dataset: {op: op || "", block: index + 1}, "data-testid": "op-box"}, label);
}

/**
 * Where the pick lands against the latency target T: the share of the budget it uses. Over T is
 * the search's call (the sample's `feasible`, from the measured latency), never a comparison here
 * that rounding could contradict.
 */
function budgetStat(best, stat) {
  const target = config().target_latency_ms;
  if (!NAS.isNum(target) || !NAS.isNum(best.latency_ms)) return null;
  const over = best.feasible === false && best.latency_ms > target;
  let share = fmt.pct(best.latency_ms / target, 0);
  if (over && share === "100%") share = "over 100%";
  const node = stat("budget used", share + " of " + fmt.ms(target), "best-budget");
  node.classList.toggle("is-over", over);
  node.title = over ? "No sample met every target yet: the pick is over T"
    : "The pick's measured latency over the target T";
  return node;
}

/** A sample's latency, with the digits it takes not to read as T when it is on the other side. */
const latencyText = (s) => fmt.msVersus(s.latency_ms, config().target_latency_ms);

/** Why the pick is the pick (the server's search_core.best.explain): how many architectures met
 * the targets, and how close the runners-up are against the validation set's sampling noise. */
function renderWhy(best) {
  const node = $id("best-why");
  const why = state.run && state.run.why;
  node.hidden = !best || !why;
  if (node.hidden) { node.replaceChildren(); return; }
  const parts = [el("span", {}, why.rule + ".")];
  const close = why.runners_up.filter((r) => r.within_noise);
  for (const r of why.runners_up.slice(0, 1)) {
    parts.push(" Next best: " + sampleLabel(r) + ", " + fmt.pct(r.accuracy) + " at " + fmt.ms(r.latency_ms)
      + " (" + fmt.num(-100 * r.margin, 2) + " points).");
  }
  if (NAS.isNum(why.noise)) {
    parts.push(" Two accuracies measured on " + why.val_size + " validation images differ by up to ±"
      + fmt.num(100 * why.noise, 2) + " points by chance: ");
    parts.push(close.length
      ? el("span", {class: "is-close", "data-testid": "best-close"},
        close.map(sampleLabel).join(", ") + (close.length > 1 ? " are" : " is") + " as good within that noise.")
      : el("span", {"data-testid": "best-close"}, "no runner-up is that close."));
  }
  node.replaceChildren(...parts);
}


export function renderBest() {
  const container = $id("best-arch");
  const statsNode = $id("best-stats");
  const best = bestSample();
  const title = $id("best-title");
  if (!best) {
    container.replaceChildren(el("p", {class: "empty-inline muted"},
      state.run && !ACTIVE.includes(state.run.status) && state.loaded ? "This run has no evaluated architecture."
        : "No architecture evaluated yet."));
    container.dataset.sampleId = "";
    container.dataset.provisional = "";
    title.textContent = "Best architecture";
    statsNode.replaceChildren();
    renderWhy(null);
    return;
  }
  renderWhy(best);
  container.dataset.sampleId = String(best.id);
  container.dataset.provisional = best.provisional ? "true" : "false";
  title.textContent = best.provisional ? "Best architecture so far" : "Best architecture";
  title.title = "The most accurate architecture that meets every target"
    + (best.provisional ? ", among the samples evaluated so far; final when the run finishes" : "");
  const ops = Array.isArray(best.ops) ? best.ops : null;
  if (ops) {
    const stages = STAGE_STARTS.filter((start) => start < ops.length).map((start, stage, starts) => {
      const end = stage + 1 < starts.length ? starts[stage + 1] : ops.length;
      return el("div", {class: "stage"},
        el("div", {class: "stage-label"}, "stage " + (stage + 1)),
        el("div", {class: "stage-ops"}, ops.slice(start, end).map((op, i) => opBox(op, start + i))));
    });
    container.replaceChildren(...stages);
  } else {
    container.replaceChildren(el("p", {class: "empty-inline muted"}, "Architecture ops not loaded yet."));
  }
  const stat = (label, value, testid) => el("div", {class: "stat"},
    el("span", {class: "stat-label"}, label), el("span", {class: "stat-value", "data-testid": testid, id: testid}, value));
  statsNode.replaceChildren(...[
    stat("accuracy", fmt.pct(best.accuracy), "best-accuracy"),
    stat("latency", latencyText(best), "best-latency"),
    budgetStat(best, stat),
    stat("objective", fmt.num(best.objective, 4), "best-objective"),
    stat("params", fmt.params(best.params), "best-params"),
    stat("MACs", fmt.macs(best.macs), "best-macs"),
    stat("memory", fmt.mb(best.memory_mb), "best-memory"),
    stat("sample", sampleLabel(best) + (NAS.isNum(best.epoch) ? " \u00b7 epoch " + (best.epoch + 1) : ""), "best-sample"),
  ].filter(Boolean));
}

// settings ---------------------------------------------------------------------------------------

export function renderConfig() {
  const c = config();
  const run = state.run || {};
  const rows = [
    ["dataset", c.dataset ? c.dataset + (c.data_dir ? " (" + c.data_dir + ")" : "") : null],
    ["runtime", c.backend === "onnxruntime" ? "ONNX Runtime" : c.backend ? "PyTorch" : null],
    ["strategy", c.strategy],
    ["epochs", NAS.isNum(c.epochs) ? c.epochs + (NAS.isNum(c.warmup_epochs) ? " (" + c.warmup_epochs + " warm-up)" : "") : null],
    ["samples per epoch", c.samples_per_epoch],
    ["target latency", NAS.isNum(requested().target_latency_ms) ? fmt.ms(c.target_latency_ms)
      : "automatic" + (NAS.isNum(c.target_latency_ms) ? ": " + fmt.ms(c.target_latency_ms) : "")],
    ["target memory", NAS.isNum(c.target_memory_mb) ? fmt.mb(c.target_memory_mb) : "none"],
    ["constraint", c.constraint || (c.hard_constraint ? "hard" : "soft")],  // the key before the forms
    ["latency weight", NAS.isNum(c.latency_weight) ? c.latency_weight : "strategy default"],
    ["resolution", NAS.isNum(c.resolution) ? c.resolution + " px" : null],
    ["width", c.width_mult !== undefined ? c.width_mult : c.width],
    ["batch size", c.batch_size],
    ["lr / arch lr", NAS.isNum(c.lr) ? c.lr + " / " + c.arch_lr : null],
    ["seed", c.seed],
    ["run directory", run.run_dir],
  ];
  $id("run-config").replaceChildren(...rows
    .filter(([, v]) => v !== null && v !== undefined && v !== "")
    .flatMap(([k, v]) => [el("dt", {}, k), el("dd", {class: k === "run directory" ? "mono break" : null}, String(v))]));
}

// samples table ----------------------------------------------------------------------------------

const COLUMNS = [
  {key: "id", label: "#", num: true, fmt: (s) => sampleLabel(s), cls: "col-id"},
  {key: "epoch", label: "Epoch", num: true, fmt: (s) => (NAS.isNum(s.epoch) ? s.epoch + 1 : fmt.DASH)},
  {key: "kind", label: "Kind", fmt: (s) => s.kind || fmt.DASH},
  {key: "accuracy", label: "Accuracy", num: true, fmt: (s) => fmt.pct(s.accuracy)},
  {key: "latency_ms", label: "Latency", num: true, fmt: latencyText,
   title: (s) => (NAS.isNum(s.latency_std_ms) ? "fastest run; median " + fmt.ms(s.latency_median_ms)
     + ", mean " + fmt.ms(s.latency_mean_ms) + " \u00b1 " + fmt.ms(s.latency_std_ms)
     + ", p90 " + fmt.ms(s.latency_p90_ms) : null)},
  {key: "predicted_latency_ms", label: "Predicted", num: true, fmt: (s) => fmt.ms(s.predicted_latency_ms)},
  {key: "memory_mb", label: "Memory", num: true, fmt: (s) => fmt.mb(s.memory_mb)},
  {key: "params", label: "Params", num: true, fmt: (s) => fmt.params(s.params)},
  {key: "macs", label: "MACs", num: true, fmt: (s) => fmt.macs(s.macs)},
  {key: "objective", label: "Objective", num: true, fmt: (s) => fmt.num(s.objective, 4)},
  {key: "retrained", label: "Retrained", num: true, fmt: (s) => fmt.pct(s.retrained),
   title: (s) => (NAS.isNum(s.retrained) ? "test accuracy after retraining from scratch" : null)},
  {key: "feasible", label: "Feasible", fmt: feasibility, title: feasibilityTitle},
  {key: "ops", label: "Ops", sortable: false, fmt: (s) => NAS.opsCompact(s.ops), cls: "mono ops"},
  {key: "download", label: "", sortable: false},
];
const sort = {key: "accuracy", dir: "desc"};

function feasibilityTitle(s) {
  if (s.uses_budget === false) return "faster than 0.85 T: budget left unused, ranked after the samples within [0.85 T, T]";
  if (s.kind === "final" && s.feasible === false && s.latency_ms <= config().target_latency_ms) {
    return "its median is within T, but one of its rounds measured at the end was over T";
  }
  return null;
}

function feasibility(s) {
  if (s.feasible === false) return "no";
  if (s.feasible !== true) return fmt.DASH;
  return s.uses_budget === false ? "yes, under 0.85 T" : "yes";
}

export function buildHead() {
  $id("samples-head").replaceChildren(...COLUMNS.map((c) => {
    if (c.sortable === false) return el("th", {class: c.key === "download" ? "col-actions" : null}, c.label);
    const th = el("th", {class: (c.num ? "num " : "") + "sortable", dataset: {sort: c.key}, tabindex: 0,
                         "aria-sort": "none", "data-testid": "sort-" + c.key}, c.label);
    const activate = () => {
      if (sort.key === c.key) sort.dir = sort.dir === "asc" ? "desc" : "asc";
      else { sort.key = c.key; sort.dir = c.num && c.key !== "latency_ms" && c.key !== "id" && c.key !== "epoch" ? "desc" : "asc"; }
      mark("table");
    };
    th.addEventListener("click", activate);
    th.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); activate(); } });
    return th;
  }));
}

function compare(a, b, key) {
  const va = a[key], vb = b[key];
  const missingA = va === null || va === undefined, missingB = vb === null || vb === undefined;
  if (missingA || missingB) return missingA === missingB ? 0 : missingA ? 1 : -1; // missing last
  if (typeof va === "number" && typeof vb === "number") return va - vb;
  return String(va).localeCompare(String(vb));
}

export function renderTable() {
  const {bySample} = retrained();
  const all = sortedSamples().map((s) => (bySample.has(s.id)
    ? Object.assign({}, s, {retrained: bySample.get(s.id).test_accuracy}) : s));
  const view = $id("samples-view").value;
  let rows;
  if (view === "all") rows = all.slice();
  else if (view === "pareto") rows = state.front.slice();
  else {
    const n = Number(view) || 20;
    rows = all.slice().sort((a, b) => compare(b, a, "accuracy") || a.id - b.id).slice(0, n);
  }
  const sign = sort.dir === "asc" ? 1 : -1;
  rows.sort((a, b) => {
    const c = compare(a, b, sort.key);
    if (c === 0) return a.id - b.id;
    const missing = (s) => s[sort.key] === null || s[sort.key] === undefined;
    return missing(a) || missing(b) ? c : sign * c; // missing values stay last either way
  });
  for (const th of document.querySelectorAll("#samples-head th[data-sort]")) {
    th.setAttribute("aria-sort", th.dataset.sort === sort.key ? (sort.dir === "asc" ? "ascending" : "descending") : "none");
  }
  const frontIds = new Set(state.front.map((s) => s.id));
  const bestNow = bestSample();
  const bestId = bestNow ? bestNow.id : null;
  $id("samples-body").replaceChildren(...rows.map((s) => {
    const cls = [frontIds.has(s.id) ? "is-pareto" : "", s.id === bestId ? "is-best" : ""].join(" ").trim();
    return el("tr", {dataset: {sampleId: s.id}, "data-testid": "sample-row", class: cls || null},
      COLUMNS.map((c) => {
        if (c.key === "download") {
          const retrain = el("button", {type: "button", class: "btn-link", "data-testid": "sample-retrain",
            title: "Retrain sample " + sampleLabel(s) + " from scratch on the run's data"}, "retrain");
          retrain.addEventListener("click", () => pickSample(s.id));
          return el("td", {class: "col-actions"}, el("a", {href: archUrl(s.id), download: "", class: "link-download",
            "data-testid": "sample-download", title: "Download the architecture JSON of sample " + sampleLabel(s)}, "arch.json"),
            " \u00b7 ", retrain);
        }
        const td = el("td", {class: [c.num ? "num" : "", c.cls || ""].join(" ").trim() || null,
                             title: c.title ? c.title(s) : (c.key === "ops" ? (s.ops || []).join(" ") : null)}, c.fmt(s));
        if (c.key === "id") {
          if (s.id === bestId) td.append(el("span", {class: "tag tag-best", title: "best architecture"}, "best"));
          if (frontIds.has(s.id)) td.append(el("span", {class: "tag tag-pareto", title: "on the Pareto front"}, "front"));
        }
        return td;
      }));
  }));
  const total = all.length;
  $id("samples-count").textContent = total ? "showing " + rows.length + " of " + total : "";
  const empty = $id("samples-empty");
  empty.hidden = total > 0;
  empty.textContent = state.run && !ACTIVE.includes(state.run.status) && state.loaded
    ? "This run has no samples." : "Waiting for the first search epoch\u2026";
  $id("samples-table").dataset.rows = String(rows.length);
}

$id("samples-view").addEventListener("change", () => mark("table"));
