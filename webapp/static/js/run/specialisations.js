/* The run view's specialisations: the form that picks again from the finished run's trained
 * supernet for another target, device or runtime (training nothing), and the table of picks with
 * their latency against their T, shared-weight accuracy, test accuracy once retrained, and the
 * pick's JSON. Kept live over Socket.IO ("specialisation" events in the run's room). */
import * as NAS from "../common.js";
import {$id, config, mark, runId, showErrors, state} from "./state.js";
import {pickSpecialisation} from "./trainings.js";

const {el, api, fmt, ACTIVE} = NAS;

export function addSpecialisations(specialisations) {
  for (const s of specialisations || []) if (s && NAS.isNum(s.id)) state.specialisations.set(s.id, s);
  mark("specialisations", "scatter", "trainings");
}

/** The finished picks, oldest first: the scatter draws them, the retrain form offers them. */
export function picks() {
  return Array.from(state.specialisations.values())
    .filter((s) => s.status === "finished" && s.pick && NAS.isNum(s.pick.latency_ms))
    .sort((a, b) => a.id - b.id);
}

/** The test accuracy of the pick's latest finished retraining (live), else the server's. */
function testAccuracy(s) {
  const trained = Array.from(state.trainings.values()).filter((t) => t.status === "finished"
    && NAS.isNum(t.test_accuracy) && t.arch_hash === s.pick.arch_hash).sort((a, b) => b.id - a.id);
  return trained.length ? trained[0].test_accuracy : s.pick.test_accuracy;
}

export const pickLabel = (s) => "pick for " + fmt.ms(s.target_latency_ms) + (s.device ? " on " + s.device : "");

/** The picks measured where the run measured, on its runtime, that no faster one beats: the run's
 * specialised front (picks on other devices or runtimes are on another latency scale). */
export function specialisedFront() {
  const run = state.run || {};
  const here = picks().filter((s) => s.device_id === run.device_id && s.group_id === run.group_id
    && s.backend === config().backend).sort((a, b) => a.pick.latency_ms - b.pick.latency_ms);
  const front = [];
  for (const s of here) if (!front.length || s.pick.accuracy > front[front.length - 1].pick.accuracy) front.push(s);
  return front;
}

function targetText(s) {
  const t = NAS.isNum(s.target_latency_ms) ? fmt.ms(s.target_latency_ms)
    : "automatic (" + fmt.pct(s.target_latency_fraction, 0) + ")";
  return t + (NAS.isNum(s.target_memory_mb) ? " \u00b7 " + fmt.num(s.target_memory_mb, 1) + " MB" : "");
}

// --- the form ----------------------------------------------------------------------------------

let formReady = false;

async function fillForm() {
  formReady = true;
  const [defaults, devices, groups] = await Promise.allSettled([api("/defaults", {quiet: true}),
    api("/devices", {quiet: true}), api("/groups", {quiet: true})]);
  const described = defaults.status === "fulfilled" ? defaults.value.described : {};
  const backend = (described && described.backend) || {};
  $id("specialise-backend").replaceChildren(...(backend.choices || []).map((value) => el(
    "option", {value}, (backend.labels && backend.labels[value]) || value)));
  $id("specialise-backend").value = config().backend || "";
  const specialise = defaults.status === "fulfilled" ? defaults.value.specialise : null;
  const generations = $id("specialise-generations");
  if (specialise) {
    Object.assign(generations, {value: specialise.generations, min: specialise.min, max: specialise.max});
    Object.assign($id("specialise-front-targets"), {value: specialise.front_targets,
                                                   min: specialise.front_min, max: specialise.front_max});
    const [low, high] = specialise.front_range;
    $id("specialise-front").title = "one pick at each of that many targets spread evenly from "
      + fmt.pct(low, 0) + " to " + fmt.pct(high, 0) + " of the uniform expectation of the device's table";
  }
  const options = [];
  for (const g of groups.status === "fulfilled" ? groups.value : []) {
    options.push(el("option", {value: "group:" + g.id}, "group " + g.name));
  }
  for (const d of devices.status === "fulfilled" ? devices.value : []) {
    options.push(el("option", {value: "device:" + d.id}, d.name));
  }
  $id("specialise-device").replaceChildren(...options);
  const run = state.run || {};
  $id("specialise-device").value = NAS.isNum(run.group_id) ? "group:" + run.group_id : "device:" + run.device_id;
  if (NAS.isNum(config().target_latency_ms)) $id("specialise-target").value = String(config().target_latency_ms);
  renderForm();
}

function renderForm() {
  const finished = state.run && state.run.status === "finished";
  $id("specialise-submit").disabled = !finished || !formReady;
  $id("specialise-front").disabled = !finished || !formReady;
  $id("specialise-unavailable").hidden = finished || !state.run;
}

/** The form's device, runtime, memory and generations as a request's body. */
function formBody() {
  const [where, id] = $id("specialise-device").value.split(":");
  const body = {backend: $id("specialise-backend").value, [where + "_id"]: Number(id)};
  const memory = $id("specialise-memory").value.trim();
  if (memory !== "") body.target_memory_mb = Number(memory);
  const generations = $id("specialise-generations").value.trim();
  if (generations !== "") body.generations = Number(generations);
  return body;
}

/** POST `body` to `path`; the answer's specialisations are shown, a refusal under the form. */
async function ask(path, body, said) {
  const error = $id("specialise-error");
  error.hidden = true;
  for (const id of ["specialise-submit", "specialise-front"]) $id(id).disabled = true;
  try {
    const answer = await api("/runs/" + runId + path, {method: "POST", body});
    addSpecialisations(Array.isArray(answer) ? answer : [answer]);
    NAS.flash(said, "info", 3000);
  } catch (e) {
    showErrors(error, e);
  } finally {
    renderForm();
  }
}

$id("specialise-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const body = Object.assign(formBody(), {target_latency_ms: Number($id("specialise-target").value)});
  ask("/specialisations", body, "Picking for " + fmt.ms(body.target_latency_ms) + " from the trained supernet.");
});

$id("specialise-front").addEventListener("click", () => {
  const body = formBody();
  const targets = $id("specialise-front-targets").value.trim();
  if (targets !== "") body.targets = Number(targets);
  ask("/specialisations/front", body, "Picking across targets, one at a time.");
});

// --- the table ---------------------------------------------------------------------------------

function statusCell(s) {
  const cell = el("td", {}, NAS.badge(s.status, {"data-testid": "specialisation-status"}));
  if (ACTIVE.includes(s.status) && NAS.isNum(s.generation)) {
    cell.append(" ", el("span", {class: "muted small"}, "generation " + s.generation + "/" + s.generations));
  }
  const note = s.error || s.message;
  if (note) cell.append(el("span", {class: "training-error", "data-testid": "specialisation-note"}, note));
  return cell;
}

function actionsCell(s) {
  const cell = el("td", {class: "col-actions"});
  if (s.status === "finished" && s.pick) {
    cell.append(el("a", {href: NAS.apiUrl("/specialisations/" + s.id + "/best_arch.json"), download: "",
                         class: "link-download", "data-testid": "specialisation-download"}, "JSON"), " ");
    const retrain = el("button", {type: "button", class: "btn-link", "data-testid": "specialisation-retrain"}, "retrain");
    retrain.addEventListener("click", () => pickSpecialisation(s.id));
    cell.append(retrain);
  }
  if (ACTIVE.includes(s.status)) {
    const cancel = el("button", {type: "button", class: "btn-link", "data-testid": "specialisation-cancel"}, "cancel");
    cancel.addEventListener("click", async () => {
      cancel.disabled = true;
      try { addSpecialisations([await api("/specialisations/" + s.id + "/cancel", {method: "POST"})]); }
      catch (e) { cancel.disabled = false; }
    });
    cell.append(cancel);
  }
  return cell;
}

export function renderSpecialisations() {
  if (!formReady && state.run) fillForm();
  renderForm();
  const rows = Array.from(state.specialisations.values()).sort((a, b) => b.id - a.id);
  $id("specialisations-body").replaceChildren(...rows.map((s) => {
    const pick = s.pick || {};
    const ratio = NAS.isNum(pick.latency_ratio) ? fmt.num(pick.latency_ratio, 2) : fmt.DASH;
    return el("tr", {dataset: {specialisationId: s.id, status: s.status}, "data-testid": "specialisation-row"},
      el("td", {}, s.device || "(deleted device)"),
      el("td", {}, s.backend),
      el("td", {class: "num", "data-testid": "specialisation-target"}, targetText(s)),
      statusCell(s),
      el("td", {class: "num", "data-testid": "specialisation-ratio",
                title: NAS.isNum(pick.latency_ms) ? fmt.ms(pick.latency_ms) + " measured" : ""}, ratio),
      el("td", {class: "num", "data-testid": "specialisation-accuracy"}, fmt.pct(pick.accuracy)),
      el("td", {class: "num", "data-testid": "specialisation-test-accuracy"}, s.pick ? fmt.pct(testAccuracy(s)) : fmt.DASH),
      actionsCell(s));
  }));
  $id("specialisations-empty").hidden = rows.length > 0;
}
