/* New run (/runs/new): the settings form. Defaults come from /api/defaults; the server validates
 * (400 {errors: {field: message}}), the messages are shown under their fields. */

import * as NAS from "./common.js";

const {el, api, $$} = NAS;
const form = document.getElementById("new-run-form");
const submit = document.getElementById("submit-run");
const formErrors = document.getElementById("form-errors");

let described = {}; // {setting: {type, nullable, min, max, choices, labels, ...}}: /api/defaults
let bundled = [];   // the datasets that need no data directory

const input = (name) => document.getElementById("f-" + name);

/** The field element a server error key belongs to (by name or alias), or null. */
function fieldFor(key) {
  return $$(".field[data-field]", form).find((f) =>
    f.dataset.field === key || (f.dataset.aliases || "").split(/\s+/).includes(key)
    || (f.querySelector("[name]") || {}).name === key) || null;
}

const {clear: clearErrors, show: showErrors} =
  NAS.fieldErrors(form, formErrors, fieldFor, "The server rejected these settings:");

function fillSelect(select, values, labels, selected) {
  select.replaceChildren(...values.map((v) => el("option", {value: v, selected: v === selected},
                                                 (labels && labels[v]) || v)));
}

function updateDataDir() {
  document.getElementById("field-data_dir").hidden = bundled.includes(input("dataset").value);
}

/** Every setting's field from the server's description of it: its choices, bounds and value. */
function applyDefaults(defaults) {
  const settings = (defaults && defaults.settings) || {};
  described = (defaults && defaults.described) || {};
  bundled = (defaults && defaults.bundled_datasets) || [];
  for (const field of $$(".field[data-field]", form)) {
    const name = field.dataset.field;
    const d = described[name];
    const control = input(name);
    if (!d || !control) continue;
    const value = settings[name];
    if (d.choices) {
      fillSelect(control, d.choices, d.labels, value);
      continue;
    }
    control.value = value === null || value === undefined ? "" : String(value);
    if ("min" in d) {
      control.min = String(d.min);
      control.max = String(d.max);
    }
  }
  updateDataDir();
}

function applyDevices(devices, groups) {
  const select = input("device_id");
  if (!Array.isArray(devices) || !devices.length) {
    select.replaceChildren(el("option", {value: ""}, "local (this server)"));
    return;
  }
  const local = devices.find((d) => d.kind === "local");
  select.replaceChildren(...devices.map((d) => {
    const where = d.kind === "local" ? "this server" : (d.host || "?") + (d.port ? ":" + d.port : "");
    const label = d.name + " \u2014 " + where + " \u00b7 " + (NAS.STATUS_LABELS[d.status] || d.status);
    return el("option", {value: d.id, selected: local ? d.id === local.id : false,
                         dataset: {status: d.status, kind: d.kind}}, label);
  }), ...(Array.isArray(groups) ? groups : []).map((g) => el("option", {value: "group:" + g.id},
    "group " + g.name + " \u2014 " + g.device_ids.length + " devices measuring as one pool")));
}

/** {body, errors}: the request body from the form, and the values that are not of their
 * setting's type; the server checks the rest (400 {errors}). */
function collect() {
  const body = {};
  const errors = {};
  const name = input("name").value.trim();
  if (name) body.name = name; // blank: the server names the run after its settings

  const device = input("device_id").value;
  if (device.startsWith("group:")) body.group_id = Number(device.slice("group:".length));
  else if (device !== "") body.device_id = Number(device);
  for (const [key, d] of Object.entries(described)) {
    const control = input(key);
    if (!control || control.closest(".field").hidden) continue;
    const raw = control.value.trim();
    if (control.validity && control.validity.badInput) { errors[key] = "must be a number"; continue; }
    if (raw === "") {
      if (d.nullable) body[key] = null;
      continue; // the server's default
    }
    if (d.type === "str") { body[key] = raw; continue; }
    const value = Number(raw);
    if (!Number.isFinite(value)) { errors[key] = "must be a number"; continue; }
    if (d.type === "int" && !Number.isInteger(value)) { errors[key] = "must be an integer"; continue; }
    body[key] = value;
  }
  return {body, errors};
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors();
  const {body, errors} = collect();
  if (Object.keys(errors).length) { showErrors(errors); return; }
  submit.disabled = true;
  submit.classList.add("is-busy");
  try {
    const run = await api("/runs", {method: "POST", body});
    window.location.href = NAS.root + "/runs/" + run.id;
  } catch (e) {
    if (e.errors) showErrors(e.errors);
    submit.disabled = false;
    submit.classList.remove("is-busy");
  }
});

input("dataset").addEventListener("change", updateDataDir);
// clear a field's error as soon as it is edited
form.addEventListener("input", (event) => {
  const field = event.target.closest(".field");
  if (field && field.classList.contains("has-error")) {
    field.classList.remove("has-error");
    const p = field.querySelector(".field-error");
    p.hidden = true;
    event.target.removeAttribute("aria-invalid");
  }
});

submit.disabled = true;
Promise.allSettled([api("/defaults"), api("/devices"), api("/groups")]).then(([defaults, devices, groups]) => {
  applyDefaults(defaults.status === "fulfilled" ? defaults.value : null);
  applyDevices(devices.status === "fulfilled" ? devices.value : null,
               groups.status === "fulfilled" ? groups.value : null);
  submit.disabled = false;
  form.setAttribute("data-ready", "true"); // not form.dataset: the form has a field named "dataset"
  input("name").focus();
});
