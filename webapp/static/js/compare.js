/* Compare (/compare?runs=1,2,3): the Pareto fronts of several runs overlaid, and a summary table. */

import * as NAS from "./common.js";

const {el, api, fmt, ACTIVE, RUN_COLORS} = NAS;
const page = document.getElementById("compare-page");
const ids = (page.dataset.runIds || "").split(",").filter(Boolean).map(Number);
const hasPlotly = typeof window.Plotly === "object" && window.Plotly !== null;
const showAll = document.getElementById("compare-show-all");
const entries = ids.map((id, i) => ({id, color: RUN_COLORS[i % RUN_COLORS.length], run: null, front: [],
                                     samples: null, error: null}));

if (!hasPlotly) NAS.flash("The charting library did not load: charts are unavailable.");

// a run's name is the user's text: Plotly would draw its tags (a link, a styled span) as HTML
const label = (e) => NAS.plotText((e.run ? e.run.name : "run") + " #" + e.id);
const hasPoint = (s) => NAS.isNum(s.latency_ms) && NAS.isNum(s.accuracy);

const customdata = (e, s) => [s.id, e.id];  // what a click downloads
const hover = (e, s) => NAS.sampleHover(s, {
  head: "<b>" + label(e) + "</b> \u00b7 sample #" + (NAS.isNum(s.number) ? s.number : s.id),
  latency: fmt.ms(s.latency_ms)});

let clickBound = false;

// target lines are traces, not shapes, so that the legend names each one's run; they are drawn
// on a hidden axis of 0..1 to span the plot's height whatever the zoom
const TARGET_AXIS = {overlaying: "y", range: [0, 1], fixedrange: true, visible: false};

function targetTrace(e, target) {
  return {type: "scatter", mode: "lines", yaxis: "y2", legendgroup: String(e.id),
          name: "target " + fmt.ms(target) + " of " + label(e), x: [target, target], y: [0, 1],
          hovertemplate: "%{fullData.name}<extra></extra>",
          line: {color: e.color, width: 1, dash: "dash"}};
}

function renderPlot() {
  const node = document.getElementById("compare-plot");
  const traces = [];
  let points = 0;
  for (const e of entries) {
    if (!e.run) continue;
    if (showAll.checked && Array.isArray(e.samples)) {
      const all = e.samples.filter(hasPoint);
      traces.push({type: "scatter", mode: "markers", name: label(e) + " (all)", legendgroup: String(e.id),
                   showlegend: false, x: all.map((s) => s.latency_ms), y: all.map((s) => 100 * s.accuracy),
                   customdata: all.map((s) => customdata(e, s)), hovertext: all.map((s) => hover(e, s)),
                   hovertemplate: NAS.SAMPLE_HOVER,
                   marker: {color: e.color, size: 5, opacity: 0.25}});
    }
    const front = e.front.filter(hasPoint);
    points += front.length;
    // a run without samples keeps its legend entry (Plotly lists no empty trace): one null point
    traces.push({type: "scatter", mode: "lines+markers", legendgroup: String(e.id),
                 name: label(e) + (front.length ? "" : " (no samples)"),
                 x: front.length ? front.map((s) => s.latency_ms) : [null],
                 y: front.length ? front.map((s) => 100 * s.accuracy) : [null],
                 customdata: front.map((s) => customdata(e, s)), hovertext: front.map((s) => hover(e, s)),
                 hovertemplate: NAS.SAMPLE_HOVER,
                 line: {shape: "hv", color: e.color, width: 2},
                 marker: {color: e.color, size: 8, line: {width: 1, color: "#ffffff"}}});
    const target = NAS.runSettings(e.run).target_latency_ms;
    if (NAS.isNum(target)) traces.push(targetTrace(e, target));
  }
  node.dataset.traces = String(entries.filter((e) => e.run).length);
  node.dataset.points = String(points);
  document.getElementById("compare-plot-empty").hidden = points > 0 || !entries.some((e) => e.run);
  if (!hasPlotly) return;
  const layout = NAS.scatterLayout({uirevision: "compare", yaxis2: TARGET_AXIS});
  Plotly.react(node, traces, layout, NAS.PLOT_CONFIG);
  if (!clickBound) {
    clickBound = true;
    node.on("plotly_click", (event) => {
      const p = event && event.points && event.points[0];
      if (p && p.customdata) NAS.download(NAS.apiUrl("/runs/" + p.customdata[1] + "/samples/" + p.customdata[0] + "/arch.json"));
    });
  }
}

function renderTable() {
  document.getElementById("compare-body").replaceChildren(...entries.map((e) => {
    const swatch = el("span", {class: "swatch", style: {background: e.color}});
    if (!e.run) {
      return el("tr", {dataset: {runId: e.id}, "data-testid": "compare-row", class: "is-missing"},
        el("td", {}, swatch, "#" + e.id), el("td", {colspan: 7, class: "muted"}, e.error || "Loading\u2026"));
    }
    const r = e.run;
    const best = r.best;
    const target = NAS.runSettings(r).target_latency_ms;
    return el("tr", {dataset: {runId: e.id, status: r.status}, "data-testid": "compare-row"},
      el("td", {}, swatch, el("a", {href: NAS.root + "/runs/" + e.id}, r.name), el("span", {class: "muted"}, " #" + e.id)),
      el("td", {}, NAS.badge(r.status)),
      el("td", {}, r.device || fmt.DASH),
      el("td", {class: "num", "data-testid": "compare-best-accuracy"}, best ? fmt.pct(best.accuracy) : fmt.DASH),
      el("td", {class: "num", "data-testid": "compare-best-latency"}, best ? fmt.ms(best.latency_ms) : fmt.DASH),
      el("td", {class: "num", "data-testid": "compare-samples"}, NAS.isNum(r.samples) ? r.samples : fmt.DASH),
      el("td", {class: "num"}, e.front.length),
      el("td", {class: "num"}, NAS.isNum(target) ? fmt.ms(target) : "auto"));
  }));
}

function render() { renderPlot(); renderTable(); }

async function loadEntry(e, quiet) {
  try {
    const [run, front] = await Promise.all([api("/runs/" + e.id, {quiet}), api("/runs/" + e.id + "/pareto", {quiet})]);
    e.run = run;
    e.front = Array.isArray(front) ? front : [];
    e.error = null;
    if (showAll.checked) e.samples = await NAS.runSamples(e.id, 0, {quiet});
  } catch (err) {
    e.error = err.status === 404 ? "No run #" + e.id + "." : err.message;
  }
}

async function loadAll(quiet) {
  await Promise.all(entries.map((e) => loadEntry(e, quiet)));
  render();
}

// --- the run picker ------------------------------------------------------------------------------

const picker = document.getElementById("compare-picker");
let pickerLoaded = false;
async function loadPicker() {
  if (pickerLoaded) return;
  const box = document.getElementById("compare-picker-list");
  try {
    const runs = await api("/runs");
    pickerLoaded = true;
    if (!runs.length) { box.replaceChildren(el("p", {class: "muted small"}, "No runs yet.")); return; }
    box.replaceChildren(...runs.map((r) => el("label", {class: "picker-item"},
      el("input", {type: "checkbox", value: r.id, checked: ids.includes(r.id), "data-testid": "compare-pick"}),
      " ", r.name, el("span", {class: "muted"}, " #" + r.id + " "), NAS.badge(r.status))));
  } catch (e) {
    box.replaceChildren(el("p", {class: "muted small"}, "Could not load the runs."));
  }
}
picker.addEventListener("toggle", () => { if (picker.open) loadPicker(); });
document.getElementById("compare-apply").addEventListener("click", () => {
  const chosen = Array.from(document.querySelectorAll("#compare-picker-list input:checked")).map((i) => i.value);
  window.location.href = NAS.root + "/compare" + (chosen.length ? "?runs=" + chosen.join(",") : "");
});

// ---------------------------------------------------------------------------------------------

document.getElementById("compare-refresh").addEventListener("click", () => loadAll(false));
showAll.addEventListener("change", async () => {
  if (showAll.checked) {
    await Promise.all(entries.filter((e) => e.run && !e.samples).map(async (e) => {
      try { e.samples = await NAS.runSamples(e.id); } catch (err) { e.samples = []; }
    }));
  }
  renderPlot();
});

if (!entries.length) {
  document.getElementById("compare-empty").hidden = false;
  document.getElementById("compare-content").hidden = true;
  picker.open = true;
  loadPicker();
} else {
  renderTable();
  loadAll(false);
  // live enough: refresh while one of the runs is active
  setInterval(() => {
    if (!document.hidden && entries.some((e) => e.run && ACTIVE.includes(e.run.status))) loadAll(true);
  }, 10000);
}

window.NAS_PAGE = {entries, reload: loadAll};
