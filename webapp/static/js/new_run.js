/* New run (/runs/new): the settings form. Defaults come from /api/defaults; the server validates
 * (400 {errors: {field: message}}), the messages are shown under their fields. */
"use strict";

(function () {
  const {el, api, $, $$} = NAS;
  const form = document.getElementById("new-run-form");
  const submit = document.getElementById("submit-run");
  const formErrors = document.getElementById("form-errors");

  const INT_FIELDS = ["epochs", "warmup_epochs", "samples_per_epoch", "seed", "batch_size", "resolution"];
  const FLOAT_FIELDS = ["target_latency_ms", "target_memory_mb", "lr", "arch_lr", "width_mult", "latency_weight", "device_wait_s"];
  const NULLABLE = ["target_latency_ms", "target_memory_mb", "latency_weight"]; // blank -> null
  const NEEDS_DATA_DIR = ["cifar10", "imagefolder"];
  const CONSTRAINT_LABELS = {absolute: "absolute: use the budget", soft: "soft: faster is better",
                             hard: "hard: T as a ceiling"};
  const BACKEND_LABELS = {pytorch: "PyTorch", onnxruntime: "ONNX Runtime"};
  const DATASET_LABELS = {digits: "digits (bundled, 8x8 digits)", shapes: "shapes (bundled, generated figures)", cifar10: "CIFAR-10 (needs a data directory)",
                          imagefolder: "Image folder (needs a data directory)"};
  const DATA_DIR_HELP = {cifar10: "The directory holding CIFAR-10's python-format batches (data_batch_1 ...).",
                         imagefolder: "One sub-directory per class."};

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
    const dataset = input("dataset").value;
    const field = document.getElementById("field-data_dir");
    field.hidden = !NEEDS_DATA_DIR.includes(dataset);
    document.getElementById("help-data_dir").textContent = DATA_DIR_HELP[dataset] || "";
  }

  function applyDefaults(defaults) {
    const settings = (defaults && defaults.settings) || {};
    // a field named differently by the server (e.g. width vs width_mult): use the server's name
    for (const field of $$(".field[data-aliases]", form)) {
      const control = field.querySelector("[name]");
      if (!(control.name in settings)) {
        const alias = field.dataset.aliases.split(/\s+/).find((a) => a in settings && a !== "device");
        if (alias) control.name = alias;
      }
    }
    const datasets = (defaults && defaults.datasets) || ["digits", "cifar10", "imagefolder"];
    const strategies = (defaults && defaults.strategies) || ["gradient", "reinforce"];
    fillSelect(input("dataset"), datasets, DATASET_LABELS, settings.dataset || datasets[0]);
    fillSelect(input("strategy"), strategies, null, settings.strategy || strategies[0]);
    const limits = (defaults && defaults.limits) || {};
    for (const control of $$("input[type=number]", form)) {
      const value = settings[control.name];
      control.value = value === null || value === undefined ? "" : String(value);
      const limit = limits[control.name];
      if (limit) {
        control.min = String(limit.min);
        control.max = String(limit.max);
      }
    }
    if (typeof settings.data_dir === "string") input("data_dir").value = settings.data_dir;
    const constraints = (defaults && defaults.constraints) || ["absolute", "soft", "hard"];
    fillSelect(input("constraint"), constraints, CONSTRAINT_LABELS, settings.constraint || constraints[0]);
    const backends = (defaults && defaults.backends) || ["pytorch"];
    fillSelect(input("backend"), backends, BACKEND_LABELS, settings.backend || backends[0]);
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

  /** {body, errors}: the request body from the form, and client-side errors. */
  function collect() {
    const body = {};
    const errors = {};
    const name = input("name").value.trim();
    if (name) body.name = name; // blank: the server names the run after its settings

    const device = input("device_id").value;
    if (device.startsWith("group:")) body.group_id = Number(device.slice("group:".length));
    else if (device !== "") body.device_id = Number(device);
    body.dataset = input("dataset").value;
    body.strategy = input("strategy").value;
    if (NEEDS_DATA_DIR.includes(body.dataset)) {
      const dir = input("data_dir").value.trim();
      if (!dir) errors.data_dir = "a data directory is needed for " + body.dataset;
      else body.data_dir = dir;
    }
    for (const control of $$("input[type=number]", form)) {
      const key = control.name;
      const field = control.closest(".field").dataset.field;
      const raw = control.value.trim();
      if (control.validity && control.validity.badInput) { errors[key] = "must be a number"; continue; }
      if (raw === "") {
        if (NULLABLE.includes(field)) body[key] = null;
        continue; // the server's default
      }
      const value = Number(raw);
      if (!Number.isFinite(value)) { errors[key] = "must be a number"; continue; }
      if (INT_FIELDS.includes(field) && !Number.isInteger(value)) { errors[key] = "must be an integer"; continue; }
      body[key] = value;
    }
    body.constraint = input("constraint").value;
    body.backend = input("backend").value;
    if (NAS.isNum(body.epochs) && NAS.isNum(body.warmup_epochs) && body.warmup_epochs > body.epochs) {
      errors.warmup_epochs = "warm-up epochs must not exceed epochs (epochs counts the warm-up too)";
    }
    for (const key of ["target_latency_ms", "target_memory_mb"]) {
      if (NAS.isNum(body[key]) && body[key] <= 0) errors[key] = "must be positive (blank: " +
        (key === "target_latency_ms" ? "automatic" : "none") + ")";
    }
    if (NAS.isNum(body.latency_weight) && body.latency_weight >= 0) {
      errors.latency_weight = "must be negative (blank: the strategy's default)";
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
})();
