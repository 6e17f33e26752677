/* Devices (/devices): registered devices with live status (device_status events), check / profile /
 * delete actions, and the form that registers a device agent. */

import * as NAS from "./common.js";

const {el, api, fmt} = NAS;
const list = document.getElementById("devices-list");
const form = document.getElementById("device-form");
const formErrors = document.getElementById("device-form-errors");
const devices = new Map(); // id -> device
let loaded = false;

const BUSY = ["checking", "profiling"];
let profileLimits = {}, profileDefaults = {}; // from /api/defaults

function order(a, b) {
  if ((a.kind === "local") !== (b.kind === "local")) return a.kind === "local" ? -1 : 1;
  return a.id - b.id;
}

function address(d) {
  if (d.kind === "local") return "this server";
  return (d.host || "?") + (d.port ? ":" + d.port : "");
}

function memory(info) {
  const mbValue = NAS.isNum(info.memory_mb) ? info.memory_mb
    : NAS.isNum(info.memory_total_bytes) ? info.memory_total_bytes / 1048576 : null;
  if (mbValue === null) return null;
  return mbValue >= 1024 ? (mbValue / 1024).toFixed(1) + " GB" : fmt.mb(mbValue);
}

function temperature(info) {
  if (NAS.isNum(info.temperature_c)) return info.temperature_c.toFixed(1) + " \u00b0C";
  const temps = info.temperatures_c;
  if (temps && typeof temps === "object") {
    const parts = Object.entries(temps).filter(([, v]) => NAS.isNum(v)).map(([k, v]) => k + " " + v.toFixed(0) + " \u00b0C");
    return parts.length ? parts.join(", ") : null;
  }
  return null;
}

function details(d) {
  const info = d.info || {};
  const rows = [
    ["device", info.device_name || info.device],
    ["host name", info.hostname],
    ["platform", info.platform],
    ["torch", info.torch],
    ["CUDA", info.cuda ? String(info.cuda) : info.cuda_available === false || info.cuda === false ? "no" : null],
    ["CPU cores", info.cpu_count],
    ["memory", memory(info)],
    ["threads", info.threads],
    ["python", info.python],
    ["agent", info.agent],
    ["power mode", info.power_mode],
    ["temperature", temperature(info)],
  ].filter(([, v]) => v !== null && v !== undefined && v !== "");
  if (!rows.length) return el("p", {class: "muted small"}, "No hardware details yet: check the device.");
  return el("dl", {class: "kv kv-compact", "data-testid": "device-info"},
            rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))]));
}

/** One stored table: its setting, the calibration fit and its error, download and re-profile. */
function lutRow(d, lut) {
  const fit = lut.calibration;
  const setting = lut.resolution + " px, width " + lut.width_mult + ", " + lut.num_classes + " classes, "
    + lut.in_channels + " ch" + (lut.backend === "onnxruntime" ? ", ONNX Runtime" : "");
  const fitText = fit
    ? "measured = " + fit.a.toFixed(3) + " \u00d7 table " + (fit.b < 0 ? "\u2212 " : "+ ") + Math.abs(fit.b).toFixed(3)
      + " ms \u00b7 error median " + fmt.pct(fit.median_abs_error) + ", max " + fmt.pct(fit.max_abs_error)
      + " on " + fit.archs + " architectures"
    : "not calibrated: re-profile it for runs to use it";
  return el("li", {class: "lut-row", "data-testid": "device-lut", dataset: {lutId: lut.id}},
    el("div", {},
      el("strong", {}, setting),
      el("span", {class: "muted"}, " \u00b7 profiled " + fmt.ago(lut.profiled_at)
                                    + (NAS.isNum(lut.run_id) ? " by run " + lut.run_id : ""))),
    el("div", {class: "small" + (fit ? "" : " muted"), "data-testid": "device-lut-fit"}, fitText),
    el("div", {class: "inline small"},
      el("a", {href: NAS.apiUrl("/devices/" + d.id + "/luts/" + lut.id + ".json"), download: "",
               "data-testid": "device-download-lut"}, "download"),
      el("button", {type: "button", class: "btn btn-sm btn-ghost", "data-testid": "device-reprofile",
                    disabled: BUSY.includes(d.status) || d.status === "offline",
                    dataset: {action: "profile", setting: JSON.stringify({
                      resolution: lut.resolution, width_mult: lut.width_mult,
                      num_classes: lut.num_classes, in_channels: lut.in_channels,
                      backend: lut.backend || "pytorch"})}},
         "Re-profile")));
}

function lutList(d) {
  const luts = d.luts || [];
  if (!luts.length) {
    return el("p", {class: "small muted", "data-testid": "device-luts"},
              "Latency lookup tables: none yet. A run profiles one, or press Profile LUT.");
  }
  return el("div", {"data-testid": "device-luts"},
    el("p", {class: "small"}, "Latency lookup tables (runs with the same setting reuse them):"),
    el("ul", {class: "lut-list"}, luts.map((lut) => lutRow(d, lut))));
}

/** A number input of the profile options, bounded by the one table of limits (/api/defaults). */
function profileInput(label, name, step, testid) {
  const limit = profileLimits[name] || {};
  return el("label", {}, label + " ", el("input", {type: "number", name, step, min: limit.min, max: limit.max,
    placeholder: String(profileDefaults[name] !== undefined ? profileDefaults[name] : "default"),
    class: "input-sm", "data-testid": testid}));
}

/** What the device measured as a member of a group's pool in the latest run on it. */
function poolLine(d) {
  const p = d.pool;
  if (!p) return null;
  const perMinute = p.busy_s > 0 ? fmt.num(60 * p.measured / p.busy_s, 0) + " per busy minute" : null;
  return el("p", {class: "small", "data-testid": "device-pool"},
    "In run " + p.run_id + "'s pool: " + p.measured + " measured" + (p.lost ? ", lost " + p.lost + "\u00d7" : "")
    + (perMinute ? ", " + perMinute : "") + " \u00b7 " + (p.busy ? "measuring" : "idle")
    + (NAS.isNum(p.pending) ? " \u00b7 " + p.pending + " waiting in the group's queue" : ""));
}

function card(d) {
  const busy = BUSY.includes(d.status);
  const profileOpts = el("details", {class: "profile-options"},
    el("summary", {class: "small"}, "profile options"),
    el("div", {class: "inline small"},
      profileInput("resolution", "resolution", 1, "device-profile-resolution"),
      profileInput("width", "width_mult", "any", "device-profile-width"),
      profileInput("classes", "num_classes", 1, "device-profile-classes"),
      profileInput("input channels", "in_channels", 1, "device-profile-channels"),
      el("label", {}, "runtime ",
         el("select", {name: "backend", "data-testid": "device-profile-backend"},
            el("option", {value: "pytorch"}, "PyTorch"), el("option", {value: "onnxruntime"}, "ONNX Runtime")))));
  const actions = el("div", {class: "card-actions"},
    el("button", {type: "button", class: "btn btn-sm", dataset: {action: "check"}, "data-testid": "device-check",
                  disabled: busy}, d.status === "checking" ? "Checking\u2026" : "Check"),
    el("button", {type: "button", class: "btn btn-sm", dataset: {action: "profile"}, "data-testid": "device-profile",
                  disabled: busy || d.status === "offline",
                  title: d.status === "offline" ? "The device is offline"
                    : "Time every op, then calibrate the table end to end (as a run does)"},
       d.status === "profiling" ? "Profiling\u2026" : "Profile LUT"),
    d.kind !== "local" ? el("button", {type: "button", class: "btn btn-sm btn-ghost btn-danger-text",
                                       dataset: {action: "delete"}, "data-testid": "device-delete", disabled: busy},
                            "Delete") : null);
  return el("article", {class: "card device-card" + (busy ? " is-busy" : ""), id: "device-" + d.id,
                        dataset: {deviceId: d.id, status: d.status, kind: d.kind}, "data-testid": "device-card"},
    el("div", {class: "device-head"},
      el("div", {},
        el("h3", {class: "device-name", "data-testid": "device-name"}, d.name),
        el("div", {class: "muted small"},
          el("span", {class: "tag"}, d.kind === "local" ? "local" : "agent"), " ",
          el("span", {class: "mono", "data-testid": "device-address"}, address(d)))),
      NAS.badge(d.status, {"data-testid": "device-status"})),
    details(d),
    lutList(d),
    d.error ? el("p", {class: "device-error", "data-testid": "device-error", role: "note"}, d.error) : null,
    el("p", {class: "small muted", "data-testid": "device-checked"},
       "Last checked: " + (d.checked_at ? fmt.ago(d.checked_at) : "never")),
    poolLine(d),
    profileOpts,
    actions);
}

function upsert(d) {
  if (!d || !NAS.isNum(d.id)) return;
  devices.set(d.id, d);
  const old = document.getElementById("device-" + d.id);
  const node = card(d);
  if (old) {
    // keep what the user typed into the profile options
    const oldOpts = old.querySelector(".profile-options");
    const newOpts = node.querySelector(".profile-options");
    if (oldOpts && newOpts) {
      newOpts.open = oldOpts.open;
      for (const input of oldOpts.querySelectorAll("input, select")) newOpts.querySelector("[name=" + input.name + "]").value = input.value;
    }
    old.replaceWith(node);
  } else {
    renderAll();
  }
}

function remove(id) {
  devices.delete(id);
  renderAll();
}

function renderAll() {
  const sorted = Array.from(devices.values()).sort(order);
  if (!sorted.length) {
    list.replaceChildren(el("p", {class: "empty muted", "data-testid": "devices-empty"}, loaded ? "No devices." : "Loading\u2026"));
    return;
  }
  list.replaceChildren(...sorted.map(card));
  renderGroups();
}

// --- groups ------------------------------------------------------------------------------------

const groups = new Map(); // id -> group
const groupForm = document.getElementById("group-form");

function renderGroups() {
  const name = (id) => (devices.get(id) || {name: "#" + id}).name;
  document.getElementById("groups-list").replaceChildren(...Array.from(groups.values()).map((g) => {
    const remove = el("button", {type: "button", class: "btn btn-sm btn-ghost", "data-testid": "delete-group"}, "Delete");
    remove.addEventListener("click", async () => {
      remove.disabled = true;
      try { await api("/groups/" + g.id, {method: "DELETE"}); await loadGroups(); load(true); }
      catch (e) { remove.disabled = false; }
    });
    return el("li", {class: "lut-row", "data-testid": "group-row", dataset: {groupId: g.id}},
      el("div", {}, el("strong", {}, g.name), el("span", {class: "muted"}, " \u00b7 " + g.device_ids.map(name).join(", "))),
      el("div", {class: "inline small"}, remove));
  }));
  const free = Array.from(devices.values()).filter((d) => d.kind !== "local" && d.group_id === null).sort(order);
  const checked = new Set(Array.from(groupForm.querySelectorAll("input[type=checkbox]:checked")).map((c) => Number(c.value)));
  document.getElementById("group-devices").replaceChildren(...(free.length ? free.map((d) => el("label", {class: "check"},
    el("input", {type: "checkbox", value: d.id, checked: checked.has(d.id), "data-testid": "group-device"}), " " + d.name))
    : [el("span", {class: "muted"}, "Register two or more device agents to group them.")]));
}

async function loadGroups() {
  const data = await api("/groups", {quiet: true});
  groups.clear();
  for (const g of data || []) groups.set(g.id, g);
  renderGroups();
}

// errors beside what they are about, in words (the API's field is device_ids)
const groupErrors = NAS.fieldErrors(groupForm, document.getElementById("group-form-errors"),
  (key) => groupForm.querySelector('.field[data-field="' + key + '"]'));

groupForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  groupErrors.clear();
  const body = {name: groupForm.elements.name.value.trim(),
                device_ids: Array.from(groupForm.querySelectorAll("input[type=checkbox]:checked")).map((c) => Number(c.value))};
  const errors = {};
  if (!body.name) errors.name = "a name is required";
  if (body.device_ids.length < 2) errors.device_ids = "Choose two or more devices.";
  if (Object.keys(errors).length) { groupErrors.show(errors); return; }
  try {
    const group = await api("/groups", {method: "POST", body});
    groupForm.reset();
    await loadGroups();
    await load(true);
    NAS.flash("Group " + group.name + " created.", "success", 3000);
  } catch (e) {
    if (e.errors) groupErrors.show(e.errors);
  }
});

// --- actions -----------------------------------------------------------------------------------

const confirmTimers = new Map();

list.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const cardNode = button.closest("[data-device-id]");
  const id = Number(cardNode.dataset.deviceId);
  const device = devices.get(id);
  const action = button.dataset.action;
  if (action === "check") {
    button.disabled = true;
    button.textContent = "Checking\u2026";
    try { upsert(await api("/devices/" + id + "/check", {method: "POST"})); } catch (e) { upsert(devices.get(id)); }
  } else if (action === "profile") {
    const body = button.dataset.setting ? JSON.parse(button.dataset.setting) : {};
    if (!button.dataset.setting) {
      for (const input of cardNode.querySelectorAll(".profile-options input")) {
        if (input.value.trim() !== "") body[input.name] = Number(input.value);
      }
      body.backend = cardNode.querySelector(".profile-options select[name=backend]").value;
    }
    button.disabled = true;
    try {
      upsert(await api("/devices/" + id + "/profile", {method: "POST", body, flash400: true}));
      NAS.flash("Profiling " + device.name + ": this takes a few minutes.", "info");
    } catch (e) { upsert(devices.get(id)); }
  } else if (action === "delete") {
    if (button.dataset.confirm !== "1") { // a second click within 4 s confirms
      button.dataset.confirm = "1";
      button.textContent = "Click again to delete";
      button.classList.add("is-confirming");
      clearTimeout(confirmTimers.get(id));
      confirmTimers.set(id, setTimeout(() => { if (devices.has(id)) upsert(devices.get(id)); }, 4000));
      return;
    }
    clearTimeout(confirmTimers.get(id));
    button.disabled = true;
    try {
      await api("/devices/" + id, {method: "DELETE"});
      remove(id);
      NAS.flash("Deleted " + device.name + ".", "info", 3000);
    } catch (e) { upsert(devices.get(id)); }
  }
});

// --- register form -----------------------------------------------------------------------------

const {clear: clearErrors, show: showErrors} =
  NAS.fieldErrors(form, formErrors, (key) => form.querySelector('.field[data-field="' + key + '"]'));

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors();
  const value = (name) => form.elements[name].value.trim();
  const body = {name: value("name"), host: value("host"), token: form.elements.token.value};
  const errors = {};
  if (!body.name) errors.name = "a name is required";
  if (!body.host) errors.host = "a host name or IP address is required";
  if (!body.token) errors.token = "the agent's token is required";
  const portInput = form.elements.port;
  if (portInput.validity.badInput) errors.port = "must be a number";
  else if (value("port") !== "") {
    const port = Number(value("port"));
    if (!Number.isInteger(port) || port < 1 || port > 65535) errors.port = "must be an integer in 1..65535";
    else body.port = port;
  }
  if (Object.keys(errors).length) { showErrors(errors); return; }
  const submit = document.getElementById("register-device");
  submit.disabled = true;
  submit.textContent = "Checking\u2026";
  try {
    const device = await api("/devices", {method: "POST", body});
    upsert(device);
    form.reset();  // the port back to its default (the page renders nano_agent's DEFAULT_PORT)
    if (device.status === "online") NAS.flash("Registered " + device.name + ": online.", "success");
    else NAS.flash("Registered " + device.name + ", but it is " + device.status + (device.error ? ": " + device.error : "."), "info", 8000);
  } catch (e) {
    if (e.errors) showErrors(e.errors);
  } finally {
    submit.disabled = false;
    submit.textContent = "Register and check";
  }
});

form.addEventListener("input", (event) => {
  const field = event.target.closest(".field");
  if (field && field.classList.contains("has-error")) {
    field.classList.remove("has-error");
    field.querySelector(".field-error").hidden = true;
    event.target.removeAttribute("aria-invalid");
  }
});

// --- live updates ------------------------------------------------------------------------------

let live = false;
const socket = NAS.getSocket();
if (socket) {
  socket.on("device_status", (data) => { if (data && data.device) upsert(data.device); });
  socket.on("connect", () => { live = true; if (loaded) load(true); }); // reconnect: catch up
  socket.on("disconnect", () => { live = false; });
}

async function load(quiet) {
  try {
    const data = await api("/devices", {quiet});
    devices.clear();
    for (const d of data || []) devices.set(d.id, d);
    loaded = true;
    renderAll();
  } catch (e) {
    if (!loaded) list.replaceChildren(el("p", {class: "empty muted"}, "Could not load the devices."));
  }
}

api("/defaults", {quiet: true}).then((defaults) => {
  profileLimits = (defaults.profile && defaults.profile.limits) || {};
  profileDefaults = (defaults.profile && defaults.profile.defaults) || {};
  if (loaded) renderAll();
}).catch(() => {}).finally(() => { load(false); loadGroups().catch(() => {}); });
// without the socket: poll while a device is busy; refresh "last checked" times now and then
setInterval(() => {
  if (document.hidden || !loaded) return;
  const busy = Array.from(devices.values()).some((d) => BUSY.includes(d.status));
  if (!live && busy) load(true);
  for (const d of devices.values()) {
    const node = document.querySelector("#device-" + d.id + " [data-testid=device-checked]");
    if (node) node.textContent = "Last checked: " + (d.checked_at ? fmt.ago(d.checked_at) : "never");
  }
}, 10000);

window.NAS_PAGE = {devices, reload: load};
