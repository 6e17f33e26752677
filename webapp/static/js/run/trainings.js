/* The run view's retrained models: the form that retrains an architecture of the run (the best, the
 * MobileNetV2 reference, or a sample picked in the samples table) from scratch, and the table of
 * trainings with their live progress, test accuracy and downloads (weights, ONNX). */
import * as NAS from "../common.js";
import {$id, bestSample, config, mark, runId, sampleLabel, showErrors, state} from "./state.js";
import {pickLabel, picks} from "./specialisations.js";

const {el, api, fmt, ACTIVE} = NAS;

const trainingUrl = (t, name) => NAS.apiUrl("/trainings/" + t.id + "/" + name);

export function addTrainings(trainings) {
  for (const t of trainings || []) if (t && NAS.isNum(t.id)) state.trainings.set(t.id, t);
  mark("trainings", "scatter", "table", "specialisations");
}

/** The latest finished retraining of each sample (id -> training), and of the reference. */
export function retrained() {
  const bySample = new Map();
  let reference = null;
  for (const t of Array.from(state.trainings.values()).sort((a, b) => a.id - b.id)) {
    if (t.status !== "finished" || !NAS.isNum(t.test_accuracy)) continue;
    if (NAS.isNum(t.sample_id)) bySample.set(t.sample_id, t);
    else if (state.reference && t.arch_hash === state.reference.arch_hash) reference = t;
  }
  return {bySample, reference};
}

/** Offer sample `id` in the form (the samples table's "retrain" button) and go there. */
export function pickSample(id) {
  state.retrainPick = id;
  offer("sample:" + id);
}

/** Offer specialisation `id`'s pick in the form (its row's "retrain" button) and go there. */
export function pickSpecialisation(id) {
  offer("specialisation:" + id);
}

function offer(choice) {
  renderTrainings();
  $id("retrain-arch").value = choice;
  $id("trainings").scrollIntoView({behavior: "smooth", block: "start"});
  $id("retrain-epochs").focus({preventScroll: true});
}

function choices() {
  const options = [];
  const best = bestSample();
  if (best) options.push(["sample:" + best.id, "best: sample " + sampleLabel(best)]);
  if (NAS.isNum(state.retrainPick) && (!best || best.id !== state.retrainPick)) {
    options.push(["sample:" + state.retrainPick, "sample " + sampleLabel(state.retrainPick)]);
  }
  if (state.reference && state.reference.arch_hash) options.push(["reference", "MobileNetV2 (reference)"]);
  for (const s of picks()) options.push(["specialisation:" + s.id, pickLabel(s)]);
  return options;
}

function renderForm() {
  const select = $id("retrain-arch");
  const chosen = select.value;
  const options = choices();
  select.replaceChildren(...options.map(([value, label]) => el("option", {value}, label)));
  if (options.some(([value]) => value === chosen)) select.value = chosen;
  $id("retrain-submit").disabled = !options.length;
  const seed = $id("retrain-seed");
  if (seed.value === "" && NAS.isNum(config().seed)) seed.value = String(config().seed);
}

function statusCell(t) {
  const cell = el("td", {}, NAS.badge(t.status, {"data-testid": "training-status"}));
  if (ACTIVE.includes(t.status) && NAS.isNum(t.epoch)) {
    cell.append(" ", el("span", {class: "muted small"}, "epoch " + t.epoch + "/" + t.epochs
      + (NAS.isNum(t.loss) ? " \u00b7 loss " + fmt.num(t.loss, 3) : "")));
  }
  if (t.error) cell.append(el("span", {class: "training-error", "data-testid": "training-error"}, t.error));
  return cell;
}

function filesCell(t) {
  const cell = el("td", {class: "col-actions"});
  for (const [name, label] of [["weights.pt", "weights (.pt)"], ["model.onnx", "ONNX"]]) {
    if ((t.files || []).includes(name)) {
      cell.append(el("a", {href: trainingUrl(t, name), download: "", class: "link-download",
                           "data-testid": "training-" + name.split(".")[1]}, label), " ");
    }
  }
  if (ACTIVE.includes(t.status)) {
    const cancel = el("button", {type: "button", class: "btn-link", "data-testid": "training-cancel"}, "cancel");
    cancel.addEventListener("click", async () => {
      cancel.disabled = true;
      try { addTrainings([await api("/trainings/" + t.id + "/cancel", {method: "POST"})]); }
      catch (e) { cancel.disabled = false; }
    });
    cell.append(cancel);
  }
  return cell;
}

export function renderTrainings() {
  renderForm();
  const rows = Array.from(state.trainings.values()).sort((a, b) => b.id - a.id);
  $id("trainings-body").replaceChildren(...rows.map((t) => el("tr", {
    dataset: {trainingId: t.id, status: t.status}, "data-testid": "training-row"},
    el("td", {}, t.label),
    statusCell(t),
    el("td", {class: "num", "data-testid": "training-test-accuracy"}, fmt.pct(t.test_accuracy)),
    el("td", {class: "num"}, fmt.pct(t.val_accuracy)),
    el("td", {class: "num"}, String(t.epochs)),
    el("td", {class: "num"}, String(t.seed)),
    el("td", {class: "num"}, NAS.isNum(t.train_time_s) ? fmt.duration(t.train_time_s) : fmt.DASH),
    filesCell(t))));
  $id("trainings-empty").hidden = rows.length > 0;
}

$id("retrain-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const error = $id("retrain-error");
  error.hidden = true;
  const choice = $id("retrain-arch").value;
  const [what, id] = choice.split(":");
  const body = choice === "reference" ? {reference: true} : {[what + "_id"]: Number(id)};
  const label = $id("retrain-arch").selectedOptions[0].textContent;
  for (const key of ["epochs", "seed"]) {
    const raw = $id("retrain-" + key).value.trim();
    if (raw !== "") body[key] = Number(raw);
  }
  const submit = $id("retrain-submit");
  submit.disabled = true;
  try {
    addTrainings([await api("/runs/" + runId + "/trainings", {method: "POST", body})]);
    NAS.flash("Retraining " + label + (NAS.isNum(body.epochs) ? " for " + body.epochs + " epochs." : "."),
              "info", 3000);
  } catch (e) {
    showErrors(error, e);
  } finally {
    submit.disabled = !choices().length;
  }
});

// a short retraining is a smoke test, not the network's accuracy: say so while the number is typed
const SHORT_EPOCHS = 10;
$id("retrain-epochs").addEventListener("input", (e) => {
  const epochs = Number(e.currentTarget.value);
  $id("retrain-hint").hidden = !(e.currentTarget.value !== "" && epochs < SHORT_EPOCHS);
});
