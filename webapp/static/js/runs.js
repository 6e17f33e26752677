/* Runs list (/): the table of runs, kept live over Socket.IO (each run's row as it changes;
   polled every 5 s only while the socket is down); pick runs to compare. */

import * as NAS from "./common.js";

const {el, api, fmt, badge, ACTIVE, PHASES} = NAS;
const POLL_MS = 5000;
const selected = new Set();
let lastJson = null;
let runs = [];

const body = document.getElementById("runs-body");
const empty = document.getElementById("runs-empty");
const compareBtn = document.getElementById("compare-btn");
const selectAll = document.getElementById("select-all-runs");

/** "epoch 4/45" and a thin bar; the epoch is 0-based in the API. */
function progressCell(run) {
  const epochs = run.epochs;
  if (run.status === "queued" || !NAS.isNum(epochs)) {
    return el("span", {class: "muted", "data-testid": "run-queue"},
              run.status === "queued" ? NAS.queueText(run) : fmt.DASH);
  }
  let done;
  if (run.status === "finished") done = epochs;
  else if (NAS.isNum(run.epoch)) done = Math.min(run.epoch + 1, epochs);
  else done = 0;
  const fraction = run.status === "finished" ? 1 : Math.max(0, (done - (run.status === "running" ? 0.5 : 0)) / epochs);
  return el("div", {class: "mini-progress"},
    el("span", {class: "mini-progress-text"},
       "epoch " + done + "/" + epochs,
       run.status === "running" && run.phase ? el("span", {class: "muted"}, " · " + (PHASES[run.phase] || run.phase)) : null),
    el("span", {class: "mini-bar is-" + run.status},
       el("span", {class: "mini-bar-fill", style: {width: (100 * fraction).toFixed(1) + "%"}})));
}

function row(run) {
  const best = run.best;
  const checkbox = el("input", {type: "checkbox", class: "run-select", "data-testid": "run-select",
                                "aria-label": "Select run " + run.name, value: run.id,
                                checked: selected.has(run.id)});
  checkbox.addEventListener("change", () => {
    if (checkbox.checked) selected.add(run.id); else selected.delete(run.id);
    updateSelection();
  });
  return el("tr", {dataset: {runId: run.id, status: run.status}, "data-testid": "run-row",
                   class: selected.has(run.id) ? "is-selected" : null},
    el("td", {class: "col-check"}, checkbox),
    el("td", {class: "col-name"},
      el("a", {href: NAS.root + "/runs/" + run.id, class: "run-link", "data-testid": "run-link"}, run.name),
      el("span", {class: "muted run-id"}, " #" + run.id),
      run.error ? el("div", {class: "row-error", title: run.error}, run.error) : null),
    el("td", {}, badge(run.status, {"data-testid": "run-status-badge"})),
    el("td", {}, run.device || fmt.DASH),
    el("td", {}, progressCell(run)),
    el("td", {class: "num", "data-testid": "run-best-accuracy"}, best ? fmt.pct(best.accuracy) : fmt.DASH),
    el("td", {class: "num", "data-testid": "run-best-latency"}, best ? fmt.ms(best.latency_ms) : fmt.DASH),
    el("td", {title: run.created_at || ""}, fmt.datetime(run.created_at)));
}

function render() {
  const ids = new Set(runs.map((r) => r.id));
  for (const id of Array.from(selected)) if (!ids.has(id)) selected.delete(id);
  body.replaceChildren(...runs.map(row));
  empty.hidden = runs.length > 0;
  document.getElementById("runs-table").classList.toggle("is-empty", runs.length === 0);
  updateSelection();
}

function updateSelection() {
  const n = selected.size;
  compareBtn.disabled = n < 1;
  compareBtn.textContent = n ? "Compare (" + n + ")" : "Compare";
  selectAll.checked = runs.length > 0 && n === runs.length;
  selectAll.indeterminate = n > 0 && n < runs.length;
  for (const tr of body.querySelectorAll("tr[data-run-id]")) {
    tr.classList.toggle("is-selected", selected.has(Number(tr.dataset.runId)));
  }
}

selectAll.addEventListener("change", () => {
  selected.clear();
  if (selectAll.checked) runs.forEach((r) => selected.add(r.id));
  for (const box of body.querySelectorAll(".run-select")) box.checked = selectAll.checked;
  updateSelection();
});

compareBtn.addEventListener("click", () => {
  // keep the table's order (newest first) but compare oldest first
  const ids = runs.filter((r) => selected.has(r.id)).map((r) => r.id).reverse();
  if (ids.length) window.location.href = NAS.root + "/compare?runs=" + ids.join(",");
});

/** The list as it now is: drawn again only when it changed. */
function show(list) {
  const json = JSON.stringify(list);
  if (json === lastJson) return;
  lastJson = json;
  runs = list;
  render();
}

let failing = false;
async function load() {
  try {
    const data = await api("/runs", {quiet: failing});
    failing = false;
    show(Array.isArray(data) ? data : []);
  } catch (e) {
    failing = true; // flashed once; keep polling quietly
    if (lastJson === null) body.replaceChildren(el("tr", {class: "placeholder"},
      el("td", {colspan: 8, class: "muted"}, "Could not load the runs.")));
  }
}

/** A run's row as the server pushed it: replaced in place, or added in the list's order
 *  (newest first). */
function upsert(run) {
  show(runs.filter((r) => r.id !== run.id).concat([run]).sort((a, b) =>
    (b.created_at || "").localeCompare(a.created_at || "") || b.id - a.id));
}

let live = false;
const socket = NAS.getSocket();
if (socket) {
  socket.on("connect", () => {
    // join the list's room, then catch up with what happened while not in it
    NAS.emitAck(socket, "subscribe_runs", {}).then((reply) => load().then(() => { live = reply.ok; }));
  });
  socket.on("disconnect", () => { live = false; });
  socket.on("run_row", (data) => { if (data && data.run) upsert(data.run); });
  socket.on("run_deleted", (data) => { if (data) show(runs.filter((r) => r.id !== data.run_id)); });
}

let timer = null;
function schedule() {  // the fallback while there are no live updates
  clearTimeout(timer);
  timer = setTimeout(async () => {
    if (!document.hidden && !live) await load();
    schedule();
  }, POLL_MS);
}
document.addEventListener("visibilitychange", () => { if (!document.hidden) load(); });

load().then(schedule);

window.NAS_PAGE = {reload: load, selected, get runs() { return runs; }, get live() { return live; },
                  ACTIVE};
