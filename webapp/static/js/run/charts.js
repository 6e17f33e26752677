/* The run view's Plotly charts: the accuracy-vs-latency scatter with its Pareto front and best
 * architecture, the training curves, and the op probabilities of every block as a heatmap. */
import * as NAS from "../common.js";
import {$id, archUrl, bestSample, config, hasPlotly, hasPoint, mark, sampleLabel, sortedSamples,
  state} from "./state.js";
import {retrained} from "./trainings.js";
import {pickLabel, picks, specialisedFront} from "./specialisations.js";

const {fmt, ACTIVE, OPS, STAGE_STARTS} = NAS;

// scatter ----------------------------------------------------------------------------------------

const customdata = (s) => [s.id];  // the id a click downloads
function hover(s) {
  return NAS.sampleHover(s, {
    head: "<b>sample " + sampleLabel(s) + "</b> \u00b7 "
      + (s.kind === "final" ? "finalist, measured again at the end"
        : "epoch " + (NAS.isNum(s.epoch) ? s.epoch + 1 : fmt.DASH) + " \u00b7 " + (s.kind || fmt.DASH))
      + (s.feasible === false ? " \u00b7 infeasible" : ""),
    latency: fmt.msVersus(s.latency_ms, config().target_latency_ms),
    note: " (predicted " + fmt.ms(s.predicted_latency_ms) + ")",
    lines: ["objective " + fmt.num(s.objective, 4)]});
}

// one trace per kind of marker, so that the legend explains each (feasibility is the sample's own
// `feasible`, decided by the search from the measured latency)
const SAMPLE_MARKERS = [
  {name: "sampled", symbol: "circle", size: 8, test: (s) => s.feasible !== false && s.kind !== "argmax" && s.kind !== "final"},
  {name: "argmax of the distribution", symbol: "diamond", size: 10, test: (s) => s.feasible !== false && s.kind === "argmax"},
  // the most accurate near T, measured again side by side at the end: the pick rests on these
  {name: "finalist, measured again", symbol: "hexagon", size: 10, test: (s) => s.feasible !== false && s.kind === "final"},
  {name: "over a target (infeasible)", symbol: "x", size: 8, test: (s) => s.feasible === false},
];

function sampleTraces(samples) {
  const lastEpoch = samples.reduce((m, s) => Math.max(m, NAS.isNum(s.epoch) ? s.epoch + 1 : 0), 1);
  const traces = [];
  for (const m of SAMPLE_MARKERS) {
    const group = samples.filter(m.test);
    if (!group.length) continue;
    traces.push({
      type: "scatter", mode: "markers", name: m.name,
      x: group.map((s) => s.latency_ms), y: group.map((s) => 100 * s.accuracy),
      customdata: group.map(customdata), hovertext: group.map(hover), hovertemplate: NAS.SAMPLE_HOVER,
      marker: {
        symbol: m.symbol, size: m.size,
        color: group.map((s) => (NAS.isNum(s.epoch) ? s.epoch + 1 : 0)),
        colorscale: [[0, "#c7d2fe"], [0.5, "#6366f1"], [1, "#1e1b4b"]],
        cmin: 1, cmax: Math.max(2, lastEpoch), opacity: 0.8,
        line: {width: 0.5, color: "#ffffff"},
        showscale: !traces.length, // one epoch colour bar, for all of them
        colorbar: {title: {text: "epoch", side: "right"}, thickness: 10, len: 0.6, outlinewidth: 0,
                   tickfont: {size: 10}},
      },
    });
  }
  return traces;
}

/**
 * The accuracies (%) the y axis shows: the samples' span, widened by half of it (2 points at
 * least). A retrained or reference point beyond it (a net retrained to 10 %) is drawn at its edge,
 * its value in its hover, so that one outlier cannot squeeze the samples into a line.
 */
function sampleBand(samples) {
  if (!samples.length) return [0, 100];
  const ys = samples.map((s) => 100 * s.accuracy);
  const low = Math.min(...ys), high = Math.max(...ys);
  const pad = Math.max(2, (high - low) / 2);
  return [Math.max(0, low - pad), Math.min(100, high + pad)];
}

/** y within the band, and the hover's note when it had to be moved there. */
function clip(band, y) {
  const shown = Math.min(band[1], Math.max(band[0], y));
  return {y: shown, note: shown === y ? "" : " (off the axis: drawn at its edge)"};
}

let scatterReady = false;

export function renderScatter() {
  const samples = sortedSamples().filter(hasPoint);
  const front = state.front;
  const node = $id("pareto-plot");
  node.dataset.points = String(samples.length);
  node.dataset.front = String(front.length);
  const empty = $id("pareto-empty");
  empty.hidden = samples.length > 0;
  if (!samples.length) {
    empty.textContent = state.run && !ACTIVE.includes(state.run.status) && state.loaded
      ? "No samples: the run ended before its first search epoch." : "Waiting for the first search epoch\u2026";
  }
  $id("pareto-summary").textContent = samples.length
    ? samples.length + " sample" + (samples.length === 1 ? "" : "s") + " \u00b7 " + front.length + " on the front" : "";
  if (!hasPlotly) return;

  const best = bestSample();
  const band = sampleBand(samples);
  const traces = sampleTraces(samples);
  traces.push({
    type: "scatter", mode: "lines+markers", name: "Pareto front",
    x: front.map((s) => s.latency_ms), y: front.map((s) => 100 * s.accuracy),
    customdata: front.map(customdata), hovertext: front.map(hover), hovertemplate: NAS.SAMPLE_HOVER,
    line: {shape: "hv", color: "#ea580c", width: 2},
    marker: {size: 9, color: "#ea580c", line: {width: 1.5, color: "#ffffff"}},
  });
  if (best && hasPoint(best)) {
    traces.push({
      type: "scatter", mode: "markers", name: best.provisional ? "best so far (most accurate within T)" : "best (most accurate within T)",
      x: [best.latency_ms], y: [100 * best.accuracy], customdata: [customdata(best)], hovertext: [hover(best)],
      hovertemplate: NAS.SAMPLE_HOVER,
      marker: {symbol: "star", size: 18, color: "#facc15", line: {width: 1.5, color: "#854d0e"}},
    });
  }
  const reference = state.reference;
  node.dataset.reference = reference && hasPoint(reference) ? reference.name : "";
  if (reference && hasPoint(reference)) {
    const {y, note} = clip(band, 100 * reference.accuracy);
    traces.push({  // named in the legend, not labelled on the plot: a label would cover the best
      type: "scatter", mode: "markers", name: "MobileNetV2 (reference)",
      x: [reference.latency_ms], y: [y], customdata: [[fmt.pct(reference.accuracy, 1) + note]],
      hovertemplate: "MobileNetV2, the same shared weights and device<br>%{x:.3f} ms, %{customdata[0]}<extra></extra>",
      marker: {symbol: "square", size: 11, color: "#14b8a6", line: {width: 1.5, color: "#0f766e"}},
    });
  }
  const trained = retrainedPoints().map((p) => Object.assign(p, clip(band, 100 * p.accuracy)));
  node.dataset.retrained = String(trained.length);
  if (trained.length) {
    traces.push({
      type: "scatter", mode: "markers", name: "retrained (test accuracy)",
      x: trained.map((p) => p.latency_ms), y: trained.map((p) => p.y),
      customdata: trained.map((p) => [p.label, fmt.pct(p.accuracy) + p.note]),
      hovertemplate: "<b>%{customdata[0]}</b> retrained from scratch<br>test accuracy <b>%{customdata[1]}</b> \u00b7 latency %{x:.2f} ms<extra></extra>",
      marker: {symbol: "triangle-up", size: 12, color: "#16a34a", line: {width: 1.5, color: "#14532d"}},
    });
  }
  const picked = picks();
  node.dataset.picks = String(picked.length);
  if (picked.length) {
    traces.push({
      type: "scatter", mode: "markers", name: "picks for other targets (specialised)",
      x: picked.map((s) => s.pick.latency_ms), y: picked.map((s) => 100 * s.pick.accuracy),
      customdata: picked.map((s) => [pickLabel(s) + " (" + s.backend + ")", fmt.num(s.pick.latency_ratio, 2)]),
      hovertemplate: "<b>%{customdata[0]}</b><br>%{x:.3f} ms (%{customdata[1]} of its T), "
        + "shared-weight accuracy %{y:.2f}%<extra></extra>",
      marker: {symbol: "star-diamond", size: 13, color: "#db2777", line: {width: 1.5, color: "#831843"}},
    });
  }
  const specialised = specialisedFront();
  node.dataset.specialisedFront = String(specialised.length);
  if (specialised.length > 1) {
    traces.push({
      type: "scatter", mode: "lines", name: "specialised front (picks across targets)",
      x: specialised.map((s) => s.pick.latency_ms), y: specialised.map((s) => 100 * s.pick.accuracy),
      hoverinfo: "skip", line: {shape: "hv", color: "#db2777", width: 2, dash: "dot"},
    });
  }
  const target = config().target_latency_ms;
  const shapes = [];
  const annotations = [];
  if (NAS.isNum(target)) {
    shapes.push({type: "line", xref: "x", yref: "paper", x0: target, x1: target, y0: 0, y1: 1,
                 line: {color: "#dc2626", width: 1.5, dash: "dash"}});
    annotations.push({x: target, y: 1, xref: "x", yref: "paper", yanchor: "bottom", showarrow: false,
                      text: "target " + fmt.ms(target), font: {size: 11, color: "#dc2626"}});
  }
  const layout = NAS.scatterLayout({
    margin: {t: 24}, legend: {font: {size: 11}},  // room for the target's label
    shapes, annotations, uirevision: "scatter", // keep the user's zoom across updates
  });
  Plotly.react(node, traces, layout, NAS.PLOT_CONFIG);
  if (!scatterReady) {
    scatterReady = true;
    node.on("plotly_click", (event) => {
      const point = event && event.points && event.points[0];
      const id = point && point.customdata && point.customdata[0];
      if (NAS.isNum(id)) {
        NAS.download(archUrl(id));
        NAS.flash("Downloading the architecture of sample " + sampleLabel(id), "info", 3000);
      }
    });
  }
}

/** Each retrained architecture at its measured latency and its retrained test accuracy. */
function retrainedPoints() {
  const {bySample, reference} = retrained();
  const points = [];
  for (const [id, t] of bySample) {
    const s = state.samples.get(id);
    if (s && NAS.isNum(s.latency_ms)) points.push({latency_ms: s.latency_ms, accuracy: t.test_accuracy, label: t.label});
  }
  if (reference && state.reference && NAS.isNum(state.reference.latency_ms)) {
    points.push({latency_ms: state.reference.latency_ms, accuracy: reference.test_accuracy, label: reference.label});
  }
  return points;
}

// curves -----------------------------------------------------------------------------------------

export function renderCurves() {
  const metrics = Array.from(state.metrics.values()).sort((a, b) => a.epoch - b.epoch);
  const node = $id("curves");
  node.dataset.epochs = String(metrics.length);
  $id("curves-empty").hidden = metrics.length > 0;
  if (!hasPlotly || !metrics.length) { if (hasPlotly && node.data) Plotly.purge(node); return; }
  const x = metrics.map((m) => m.epoch + 1);
  const val = (key, scale = 1) => metrics.map((m) => (NAS.isNum(m[key]) ? m[key] * scale : null));
  const traces = [
    {x, y: val("train_loss"), name: "train loss", type: "scatter", mode: "lines+markers",
     line: {color: "#2563eb", width: 2}, marker: {size: 4}, hovertemplate: "epoch %{x}: loss %{y:.4f}<extra></extra>"},
    {x, y: val("train_accuracy", 100), name: "train accuracy (%)", yaxis: "y2", type: "scatter",
     mode: "lines+markers", line: {color: "#059669", width: 2}, marker: {size: 4},
     hovertemplate: "epoch %{x}: accuracy %{y:.2f}%<extra></extra>"},
    {x, y: val("expected_latency_ms"), name: "expected latency (ms)", xaxis: "x", yaxis: "y3", type: "scatter",
     mode: "lines+markers", line: {color: "#ea580c", width: 2}, marker: {size: 4},
     hovertemplate: "epoch %{x}: expected latency %{y:.2f} ms<extra></extra>"},
    {x, y: val("entropy"), name: "entropy", yaxis: "y4", type: "scatter", mode: "lines",
     line: {color: "#7c3aed", width: 1.5, dash: "dot"}, hovertemplate: "epoch %{x}: entropy %{y:.3f}<extra></extra>"},
  ];
  const shapes = [];
  const annotations = [];
  const warmup = config().warmup_epochs;
  if (NAS.isNum(warmup) && warmup > 0) {
    shapes.push({type: "rect", xref: "x", yref: "paper", x0: 0.5, x1: warmup + 0.5, y0: 0, y1: 1,
                 fillcolor: "rgba(100,116,139,0.08)", line: {width: 0}, layer: "below"});
    annotations.push({x: 0.5, y: 1, xref: "x", yref: "paper", xanchor: "left", yanchor: "bottom",
                      showarrow: false, text: "warm-up", font: {size: 10, color: "#64748b"}});
  }
  const target = config().target_latency_ms;
  if (NAS.isNum(target)) {
    shapes.push({type: "line", xref: "paper", yref: "y3", x0: 0, x1: 1, y0: target, y1: target,
                 line: {color: "#dc2626", width: 1, dash: "dash"}});
  }
  const epochs = (state.run && state.run.epochs) || x[x.length - 1];
  const layout = {
    font: NAS.PLOT_FONT, margin: {l: 56, r: 56, t: 20, b: 40}, hovermode: "x unified",
    paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "#ffffff",
    xaxis: {title: {text: "epoch"}, range: [0.5, Math.max(epochs, x[x.length - 1]) + 0.5], gridcolor: "#eef0f3",
            anchor: "y3", zeroline: false, tickformat: "d", dtick: epochs <= 20 ? 1 : undefined},
    yaxis: {domain: [0.56, 1], title: {text: "loss"}, gridcolor: "#eef0f3", zeroline: false},
    yaxis2: {overlaying: "y", side: "right", title: {text: "accuracy %"}, showgrid: false, zeroline: false,
             tickmode: "auto", nticks: 5},
    yaxis3: {domain: [0, 0.44], title: {text: "latency ms"}, gridcolor: "#eef0f3", zeroline: false},
    yaxis4: {overlaying: "y3", side: "right", range: [0, 1.05], title: {text: "entropy"}, showgrid: false, zeroline: false,
             tickmode: "linear", tick0: 0, dtick: 0.25},
    legend: {orientation: "h", x: 0, y: -0.2, font: {size: 11}},
    shapes, annotations, uirevision: "curves",
  };
  Plotly.react(node, traces, layout, NAS.PLOT_CONFIG);
}

// heatmap ----------------------------------------------------------------------------------------

/** The op names of block b (the columns of its probabilities). */
function blockOps(b, length) {
  const blocks = state.run && state.run.space_blocks;
  if (Array.isArray(blocks) && Array.isArray(blocks[b])) return blocks[b];
  return length === OPS.length ? OPS : OPS.slice(0, length); // the space's order; no zero in 6-op blocks
}

export function renderHeatmap() {
  const withProbs = Array.from(state.metrics.values())
    .filter((m) => Array.isArray(m.arch_probabilities) && m.arch_probabilities.length)
    .sort((a, b) => a.epoch - b.epoch);
  const slider = $id("heatmap-epoch");
  const label = $id("heatmap-epoch-label");
  const node = $id("heatmap");
  $id("heatmap-empty").hidden = withProbs.length > 0;
  if (!withProbs.length) {
    slider.disabled = true;
    label.textContent = fmt.DASH;
    node.dataset.epoch = "";
    return;
  }
  let index = withProbs.length - 1;
  if (state.heatmapEpoch !== null) {
    const i = withProbs.findIndex((m) => m.epoch === state.heatmapEpoch);
    if (i >= 0) index = i;
  }
  slider.disabled = withProbs.length < 2;
  slider.min = "0";
  slider.max = String(withProbs.length - 1);
  slider.value = String(index);
  const metric = withProbs[index];
  label.textContent = (metric.epoch + 1) + (metric.phase === "warmup" ? " (warm-up)" : "");
  node.dataset.epoch = String(metric.epoch + 1);
  if (!hasPlotly) return;

  const probs = metric.arch_probabilities;
  const z = [];
  const text = [];
  const y = [];
  probs.forEach((row, b) => {
    const names = blockOps(b, row.length);
    const zr = OPS.map(() => null);
    names.forEach((name, j) => {
      const col = OPS.indexOf(name);
      if (col >= 0 && NAS.isNum(row[j])) zr[col] = row[j];
    });
    z.push(zr);
    text.push(zr.map((v) => (v === null ? "" : v.toFixed(2))));
    y.push(b + 1);
  });
  const shapes = [];
  for (const s of STAGE_STARTS.filter((start) => start > 0 && start < probs.length)) {
    shapes.push({type: "line", xref: "paper", yref: "y", x0: 0, x1: 1, y0: s + 0.5, y1: s + 0.5,
                 line: {color: "#334155", width: 1}});
  }
  const trace = {
    type: "heatmap", z, x: OPS.map((o) => (o === "zero" ? "skip" : o.replace("_", " "))), y, text,
    texttemplate: "%{text}", textfont: {size: 9}, zmin: 0, zmax: 1, xgap: 1, ygap: 1, hoverongaps: false,
    colorscale: [[0, "#f8fafc"], [0.25, "#bfdbfe"], [0.6, "#3b82f6"], [1, "#1e3a8a"]],
    colorbar: {thickness: 10, len: 0.8, outlinewidth: 0, tickfont: {size: 10}},
    hovertemplate: "block %{y} \u00b7 %{x}: p = %{z:.3f}<extra></extra>",
  };
  const layout = {
    font: NAS.PLOT_FONT, margin: {l: 44, r: 8, t: 8, b: 40},
    paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "#e5e7eb",
    xaxis: {side: "bottom", type: "category", tickfont: {size: 10}},
    yaxis: {autorange: "reversed", title: {text: "block"}, dtick: 1, tickfont: {size: 9}},
    shapes,
  };
  Plotly.react(node, [trace], layout, NAS.PLOT_CONFIG);
}

$id("heatmap-epoch").addEventListener("input", (event) => {
  const withProbs = Array.from(state.metrics.values())
    .filter((m) => Array.isArray(m.arch_probabilities) && m.arch_probabilities.length)
    .sort((a, b) => a.epoch - b.epoch);
  const index = Number(event.target.value);
  const latest = index >= withProbs.length - 1;
  state.heatmapEpoch = latest ? null : withProbs[index].epoch; // at the end: follow new epochs
  mark("heatmap");
});

// best architecture ------------------------------------------------------------------------------
