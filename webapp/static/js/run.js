/* Run view (/runs/<id>): progress, the accuracy-vs-latency scatter with its Pareto front, training
 * curves, the op-probability heatmap, the best architecture and the samples table, all kept live
 * over Socket.IO (polling while the socket is down).
 *
 * Order of operations (so that no event is lost): subscribe to the run's room first, then fetch;
 * events that arrive before the fetch completes are queued and replayed on top of it. Samples are
 * de-duplicated by id, epoch metrics by epoch. After a reconnect the page fetches what it missed.
 */
"use strict";

(function () {
  const {el, api, fmt, ACTIVE, PHASES, OPS, BLOCKS_PER_STAGE} = NAS;
  const page = document.getElementById("run-page");
  const runId = Number(page.dataset.runId);
  const hasPlotly = typeof window.Plotly === "object" && window.Plotly !== null;
  const POLL_MS = 5000;

  const state = {
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
  };

  if (!hasPlotly) NAS.flash("The charting library did not load: charts are unavailable.");

  // --- helpers -----------------------------------------------------------------------------------

  const $id = (id) => document.getElementById(id);
  const isActive = () => state.run && ACTIVE.includes(state.run.status);
  const runUrl = (suffix) => NAS.apiUrl("/runs/" + runId + (suffix || ""));
  const archUrl = (sampleId) => runUrl("/samples/" + sampleId + "/arch.json");
  const config = () => (state.run && state.run.config) || {};
  const hasPoint = (s) => NAS.isNum(s.latency_ms) && NAS.isNum(s.accuracy);

  /** The server's front as samples, latency ascending (ids whose sample is not here yet wait). */
  function frontSamples() {
    return Array.from(state.frontIds).map((id) => state.samples.get(id)).filter((s) => s && hasPoint(s))
      .sort((a, b) => a.latency_ms - b.latency_ms || a.id - b.id);
  }

  /** A sample event's change of the front: {added: [ids], removed: [ids]}. */
  function applyFrontDelta(delta) {
    for (const id of (delta && delta.removed) || []) state.frontIds.delete(id);
    for (const id of (delta && delta.added) || []) state.frontIds.add(id);
  }

  function sortedSamples() {
    return Array.from(state.samples.values()).sort((a, b) => a.id - b.id);
  }

  function maxSampleId() {
    let max = 0;
    for (const id of state.samples.keys()) if (id > max) max = id;
    return max;
  }

  /**
   * The best sample with its full figures where the samples are loaded: the server's (run.best,
   * set when the run finishes) or, until then, the highest objective so far (among the feasible
   * samples with hard constraints), marked provisional.
   */
  function bestSample() {
    const best = state.run && state.run.best;
    if (best) return Object.assign({}, state.samples.get(best.id) || {}, best, {provisional: false});
    const hard = config().hard_constraint === true;
    let top = null;
    for (const s of state.samples.values()) {
      if (!NAS.isNum(s.objective) || (hard && s.feasible === false)) continue;
      if (!top || s.objective > top.objective || (s.objective === top.objective && s.id < top.id)) top = s;
    }
    return top ? Object.assign({}, top, {provisional: true}) : null;
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
  function mark(...parts) { parts.forEach((p) => dirty.add(p)); flush(); }
  const ALL = ["header", "progress", "scatter", "curves", "heatmap", "best", "table", "config"];

  const RENDER = {
    header: renderHeader, progress: renderProgress, scatter: renderScatter, curves: renderCurves,
    heatmap: renderHeatmap, best: renderBest, table: renderTable, config: renderConfig,
  };

  // header, buttons --------------------------------------------------------------------------------

  function renderHeader() {
    const run = state.run;
    if (!run) return;
    $id("run-name").textContent = run.name;
    document.title = run.name + " \u00b7 edge-nas";
    NAS.setBadge($id("run-status"), run.status);
    $id("run-device").textContent = run.device || fmt.DASH;
    const times = [];
    times.push("created " + fmt.datetime(run.created_at));
    if (run.started_at) {
      const end = run.finished_at ? NAS.parseTime(run.finished_at) : (isActive() ? new Date() : null);
      const start = NAS.parseTime(run.started_at);
      if (start && end) times.push((run.finished_at ? "took " : "running for ") + fmt.duration((end - start) / 1000));
    }
    $id("run-times").textContent = times.join(" \u00b7 ");

    $id("cancel-run").disabled = !isActive();
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

  // progress ---------------------------------------------------------------------------------------

  function renderProgress() {
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
    if (run.status === "queued") phaseNode.textContent = "Waiting for the worker";
    else if (run.status === "finished") phaseNode.textContent = "Done";
    else if (!phase && run.status === "running") phaseNode.textContent = "Starting\u2026";
    else if (!ACTIVE.includes(run.status)) phaseNode.textContent = NAS.STATUS_LABELS[run.status] || run.status;
    else phaseNode.textContent = PHASES[phase] || (phase ? String(phase) : fmt.DASH);
    phaseNode.dataset.phase = phase || "";

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
    $id("progress-stats").textContent = stats.join(" \u00b7 ");
    $id("run-message").textContent = state.message || "";
  }

  // scatter ----------------------------------------------------------------------------------------

  /** The ops in two hover lines (stages 1-3, 4-5). */
  function hoverOps(ops) {
    if (!Array.isArray(ops) || !ops.length) return fmt.DASH;
    const cut = 3 * BLOCKS_PER_STAGE;
    return NAS.opsCompact(ops.slice(0, cut)) + (ops.length > cut ? " \u00b7<br>" + NAS.opsCompact(ops.slice(cut)) : "");
  }

  function customdata(s) {
    return [s.id, hoverOps(s.ops), fmt.params(s.params), fmt.macs(s.macs), fmt.mb(s.memory_mb),
            NAS.isNum(s.epoch) ? s.epoch + 1 : fmt.DASH, s.kind || fmt.DASH, fmt.num(s.objective, 4),
            fmt.ms(s.predicted_latency_ms), s.feasible === false ? " \u00b7 infeasible" : ""];
  }

  const HOVER = "<b>sample #%{customdata[0]}</b> \u00b7 epoch %{customdata[5]} \u00b7 %{customdata[6]}%{customdata[9]}<br>"
    + "accuracy <b>%{y:.2f}%</b> \u00b7 latency <b>%{x:.2f} ms</b> (predicted %{customdata[8]})<br>"
    + "params %{customdata[2]} \u00b7 MACs %{customdata[3]} \u00b7 memory %{customdata[4]}<br>"
    + "objective %{customdata[7]}<br><span style=\"font-family:monospace\">%{customdata[1]}</span><extra></extra>";

  let scatterReady = false;

  function renderScatter() {
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
    const lastEpoch = samples.reduce((m, s) => Math.max(m, NAS.isNum(s.epoch) ? s.epoch + 1 : 0), 1);
    const traces = [
      {
        type: "scatter", mode: "markers", name: "samples",
        x: samples.map((s) => s.latency_ms), y: samples.map((s) => 100 * s.accuracy),
        customdata: samples.map(customdata), hovertemplate: HOVER,
        marker: {
          size: samples.map((s) => (s.kind === "argmax" ? 10 : 8)),
          symbol: samples.map((s) => (s.feasible === false ? "x" : s.kind === "argmax" ? "diamond" : "circle")),
          color: samples.map((s) => (NAS.isNum(s.epoch) ? s.epoch + 1 : 0)),
          colorscale: [[0, "#c7d2fe"], [0.5, "#6366f1"], [1, "#1e1b4b"]],
          cmin: 1, cmax: Math.max(2, lastEpoch), opacity: 0.8,
          line: {width: 0.5, color: "#ffffff"},
          colorbar: {title: {text: "epoch", side: "right"}, thickness: 10, len: 0.6, outlinewidth: 0,
                     tickfont: {size: 10}},
        },
      },
      {
        type: "scatter", mode: "lines+markers", name: "Pareto front",
        x: front.map((s) => s.latency_ms), y: front.map((s) => 100 * s.accuracy),
        customdata: front.map(customdata), hovertemplate: HOVER,
        line: {shape: "hv", color: "#ea580c", width: 2},
        marker: {size: 9, color: "#ea580c", line: {width: 1.5, color: "#ffffff"}},
      },
    ];
    if (best && hasPoint(best)) {
      traces.push({
        type: "scatter", mode: "markers", name: best.provisional ? "best so far (objective)" : "best (objective)",
        x: [best.latency_ms], y: [100 * best.accuracy], customdata: [customdata(best)], hovertemplate: HOVER,
        marker: {symbol: "star", size: 18, color: "#facc15", line: {width: 1.5, color: "#854d0e"}},
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
          NAS.flash("Downloading the architecture of sample #" + id, "info", 3000);
        }
      });
    }
  }

  // curves -----------------------------------------------------------------------------------------

  function renderCurves() {
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

  function renderHeatmap() {
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
    for (let s = BLOCKS_PER_STAGE; s < probs.length; s += BLOCKS_PER_STAGE) {
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

  function renderBest() {
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
      return;
    }
    container.dataset.sampleId = String(best.id);
    container.dataset.provisional = best.provisional ? "true" : "false";
    title.textContent = best.provisional ? "Best architecture so far" : "Best architecture";
    title.title = best.provisional ? "Highest objective among the samples evaluated so far; final when the run finishes" : "";
    const ops = Array.isArray(best.ops) ? best.ops : null;
    if (ops) {
      const stages = [];
      for (let s = 0; s < ops.length; s += BLOCKS_PER_STAGE) {
        stages.push(el("div", {class: "stage"},
          el("div", {class: "stage-label"}, "stage " + (s / BLOCKS_PER_STAGE + 1)),
          el("div", {class: "stage-ops"}, ops.slice(s, s + BLOCKS_PER_STAGE).map((op, i) => opBox(op, s + i)))));
      }
      container.replaceChildren(...stages);
    } else {
      container.replaceChildren(el("p", {class: "empty-inline muted"}, "Architecture ops not loaded yet."));
    }
    const stat = (label, value, testid) => el("div", {class: "stat"},
      el("span", {class: "stat-label"}, label), el("span", {class: "stat-value", "data-testid": testid, id: testid}, value));
    statsNode.replaceChildren(
      stat("accuracy", fmt.pct(best.accuracy), "best-accuracy"),
      stat("latency", fmt.ms(best.latency_ms), "best-latency"),
      stat("objective", fmt.num(best.objective, 4), "best-objective"),
      stat("params", fmt.params(best.params), "best-params"),
      stat("MACs", fmt.macs(best.macs), "best-macs"),
      stat("memory", fmt.mb(best.memory_mb), "best-memory"),
      stat("sample", "#" + best.id + (NAS.isNum(best.epoch) ? " \u00b7 epoch " + (best.epoch + 1) : ""), "best-sample"));
  }

  // settings ---------------------------------------------------------------------------------------

  function renderConfig() {
    const c = config();
    const run = state.run || {};
    const rows = [
      ["dataset", c.dataset ? c.dataset + (c.data_dir ? " (" + c.data_dir + ")" : "") : null],
      ["strategy", c.strategy],
      ["epochs", NAS.isNum(c.epochs) ? c.epochs + (NAS.isNum(c.warmup_epochs) ? " (" + c.warmup_epochs + " warm-up)" : "") : null],
      ["samples per epoch", c.samples_per_epoch],
      ["target latency", NAS.isNum(c.target_latency_ms) ? fmt.ms(c.target_latency_ms) : "automatic"],
      ["target memory", NAS.isNum(c.target_memory_mb) ? fmt.mb(c.target_memory_mb) : "none"],
      ["constraints", c.hard_constraint ? "hard" : "soft"],
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
    {key: "id", label: "#", num: true, fmt: (s) => "#" + s.id, cls: "col-id"},
    {key: "epoch", label: "Epoch", num: true, fmt: (s) => (NAS.isNum(s.epoch) ? s.epoch + 1 : fmt.DASH)},
    {key: "kind", label: "Kind", fmt: (s) => s.kind || fmt.DASH},
    {key: "accuracy", label: "Accuracy", num: true, fmt: (s) => fmt.pct(s.accuracy)},
    {key: "latency_ms", label: "Latency", num: true, fmt: (s) => fmt.ms(s.latency_ms),
     title: (s) => (NAS.isNum(s.latency_std_ms) ? "fastest run; median " + fmt.ms(s.latency_median_ms)
       + ", mean " + fmt.ms(s.latency_mean_ms) + " \u00b1 " + fmt.ms(s.latency_std_ms)
       + ", p90 " + fmt.ms(s.latency_p90_ms) : null)},
    {key: "predicted_latency_ms", label: "Predicted", num: true, fmt: (s) => fmt.ms(s.predicted_latency_ms)},
    {key: "memory_mb", label: "Memory", num: true, fmt: (s) => fmt.mb(s.memory_mb)},
    {key: "params", label: "Params", num: true, fmt: (s) => fmt.params(s.params)},
    {key: "macs", label: "MACs", num: true, fmt: (s) => fmt.macs(s.macs)},
    {key: "objective", label: "Objective", num: true, fmt: (s) => fmt.num(s.objective, 4)},
    {key: "feasible", label: "Feasible", fmt: (s) => (s.feasible === true ? "yes" : s.feasible === false ? "no" : fmt.DASH)},
    {key: "ops", label: "Ops", sortable: false, fmt: (s) => NAS.opsCompact(s.ops), cls: "mono ops"},
    {key: "download", label: "", sortable: false},
  ];
  const sort = {key: "objective", dir: "desc"};

  function buildHead() {
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

  function renderTable() {
    const all = sortedSamples();
    const view = $id("samples-view").value;
    let rows;
    if (view === "all") rows = all.slice();
    else if (view === "pareto") rows = state.front.slice();
    else {
      const n = Number(view) || 20;
      rows = all.slice().sort((a, b) => compare(b, a, "objective") || a.id - b.id).slice(0, n);
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
            return el("td", {class: "col-actions"}, el("a", {href: archUrl(s.id), download: "", class: "link-download",
              "data-testid": "sample-download", title: "Download the architecture JSON of sample #" + s.id}, "arch.json"));
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

  // --- state updates -----------------------------------------------------------------------------

  function setRun(run, {announce = false} = {}) {
    const previous = state.run;
    if (previous && !ACTIVE.includes(previous.status) && ACTIVE.includes(run.status)) {
      state.progress = null; // resumed: a new worker, new progress
    }
    state.run = Object.assign({}, previous || {}, run);
    if (run.progress && isNewer(run.progress, state.progress)) state.progress = run.progress;
    if (run.message !== undefined && run.message !== null) state.message = run.message;
    if (announce && previous && previous.status !== run.status) announceStatus(state.run);
    mark(...ALL);
  }

  /** A stored progress snapshot (from a fetch) must not replace a newer one from the socket. */
  function isNewer(incoming, current) {
    if (!current) return true;
    if (NAS.isNum(incoming.fraction) && NAS.isNum(current.fraction)) return incoming.fraction >= current.fraction;
    const key = (p) => [NAS.isNum(p.epoch) ? p.epoch : -1, NAS.isNum(p.step) ? p.step : -1];
    const [a, b] = [key(incoming), key(current)];
    return a[0] > b[0] || (a[0] === b[0] && a[1] >= b[1]);
  }

  function announceStatus(run) {
    const best = run.best;
    if (run.status === "finished") {
      NAS.flash("Search finished" + (best ? ": best " + fmt.pct(best.accuracy) + " at " + fmt.ms(best.latency_ms) : "."), "success");
    } else if (run.status === "failed") {
      NAS.flash("The run failed" + (run.error ? ": " + run.error : "."));
    } else if (run.status === "cancelled") {
      NAS.flash("The run was cancelled.", "info");
    } else if (run.status === "interrupted") {
      NAS.flash("The run was interrupted" + (run.resumable ? "; it can be resumed." : "."), "info");
    } else if (run.status === "running") {
      NAS.flash("The run started.", "info", 3000);
    }
  }

  function addSamples(samples) {
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

  function addMetrics(metrics) {
    for (const m of metrics || []) if (m && NAS.isNum(m.epoch)) state.metrics.set(m.epoch, m);
    mark("curves", "heatmap");
  }

  // the best sample is the server's call (objective, hard constraints): refetch the run after samples
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
    run_message(data) {
      state.message = data.text;
      mark("progress");
    },
    run_status(data) {
      if (!data.run) return;
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
    const [run, samples, metrics, front] = await Promise.allSettled([
      api("/runs/" + runId, {quiet}),
      api("/runs/" + runId + "/samples" + (afterId ? "?after=" + afterId : ""), {quiet}),
      api("/runs/" + runId + "/metrics", {quiet}),
      api("/runs/" + runId + "/pareto", {quiet}),
    ]);
    if (run.status === "fulfilled" && run.value) setRun(run.value, {announce: state.loaded});
    if (front.status === "fulfilled" && Array.isArray(front.value)) {
      state.frontIds = new Set(front.value.map((s) => s.id));
    }
    if (samples.status === "fulfilled") addSamples(samples.value);
    if (metrics.status === "fulfilled") addMetrics(metrics.value);
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

  // --- buttons -----------------------------------------------------------------------------------

  async function action(button, path, label) {
    button.disabled = true;
    try {
      const run = await api("/runs/" + runId + path, {method: "POST"});
      if (run) setRun(run, {announce: true});
      NAS.flash(label, "info", 3000);
    } catch (e) {
      mark("header"); // re-enable per the state
    }
  }

  $id("cancel-run").addEventListener("click", (e) => action(e.currentTarget, "/cancel", "Cancelling the run\u2026"));
  $id("resume-run").addEventListener("click", (e) => {
    state.progress = null;
    action(e.currentTarget, "/resume", "Resuming the run\u2026");
  });
  $id("download-best").addEventListener("click", () => NAS.download(runUrl("/best.json")));
  $id("download-csv").addEventListener("click", () => NAS.download(runUrl("/samples.csv")));

  // delete: a second click within 4 s confirms (no blocking dialog)
  const del = $id("delete-run");
  let deleteTimer = null;
  function resetDelete() {
    clearTimeout(deleteTimer);
    del.classList.remove("is-confirming");
    del.dataset.confirm = "";
    del.textContent = "Delete";
  }
  del.addEventListener("click", async () => {
    if (del.dataset.confirm !== "1") {
      del.dataset.confirm = "1";
      del.classList.add("is-confirming");
      del.textContent = "Click again to delete";
      deleteTimer = setTimeout(resetDelete, 4000);
      return;
    }
    resetDelete();
    del.disabled = true;
    try {
      await api("/runs/" + runId, {method: "DELETE"});
      window.location.href = NAS.root + "/";
    } catch (e) {
      mark("header");
    }
  });

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
})();
