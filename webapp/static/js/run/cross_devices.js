/* The run view's cross-device table: each pick of the run (its search's and its specialisations')
 * measured on every device and runtime one of them was picked for, in one sitting; a cell is the
 * pick's latency there over its own T. Kept live over Socket.IO ("cross_table" events in the run's
 * room, one per cell measured); refetched when a specialisation finishes (a new row or column). */
import * as NAS from "../common.js";
import {$id, mark, runId, state} from "./state.js";

const {el, api, fmt} = NAS;

export function setCrossTable(table) {
  if (table && Array.isArray(table.rows)) state.crossTable = table;
  mark("crossTable");
}

export const refreshCrossTable = NAS.debounce(async () => {
  try { setCrossTable(await api("/runs/" + runId + "/cross_table", {quiet: true})); } catch (e) { /* next event */ }
}, 500);

const columnLabel = (c) => (c.device || "(deleted device)") + " \u00b7 " + c.backend;

function rowLabel(row, table) {
  const own = NAS.isNum(row.own_column) ? " on " + columnLabel(table.columns[row.own_column]) : "";
  return (row.specialisation_id === null ? "the search's pick" : "pick #" + row.specialisation_id)
    + " for " + fmt.ms(row.target_latency_ms) + own;
}

function cell(c, own) {
  const attrs = {class: "num" + (own ? " cross-own" : ""), "data-testid": "cross-cell"};
  if (!c) return el("td", attrs, fmt.DASH);
  if (!NAS.isNum(c.latency_ms)) {
    return el("td", Object.assign(attrs, {title: c.error || ""}), el("span", {class: "training-error"}, "not measured"));
  }
  attrs.class += c.within_target ? " cross-within" : " cross-over";
  attrs.dataset = {within: String(c.within_target)};
  attrs.title = fmt.ms(c.latency_ms) + (c.within_target ? " \u2264" : " >") + " its T; measured " + (c.measured_at || "");
  return el("td", attrs, fmt.ms(c.latency_ms) + " (" + fmt.num(c.latency_ratio, 2) + " T)");
}

export function renderCrossTable() {
  const table = state.crossTable;
  const ready = !!(table && table.columns.length >= 2);
  $id("cross-measure").disabled = !ready || table.measuring;
  $id("cross-measure").textContent = table && table.measuring ? "Measuring\u2026" : "Measure every pick on every device";
  $id("cross-empty").hidden = ready;
  $id("cross-wrap").hidden = !ready;
  if (!ready) return;
  $id("cross-head").replaceChildren(el("tr", {}, el("th", {}, "Pick"),
    ...table.columns.map((c) => el("th", {class: "num", "data-testid": "cross-column"}, columnLabel(c)))));
  $id("cross-body").replaceChildren(...table.rows.map((row) => el("tr", {"data-testid": "cross-row"},
    el("td", {}, rowLabel(row, table)),
    ...row.cells.map((c, i) => cell(c, i === row.own_column)))));
}

$id("cross-measure").addEventListener("click", async () => {
  const error = $id("cross-error");
  error.hidden = true;
  $id("cross-measure").disabled = true;
  try {
    setCrossTable(await api("/runs/" + runId + "/cross_table", {method: "POST", quiet: true}));
  } catch (e) {
    error.textContent = e.message || String(e);
    error.hidden = false;
    refreshCrossTable();
  }
});
