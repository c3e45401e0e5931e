// The page of shared/serve.py: uploads files to /api/predict and shows what comes back.
// Everything it loads comes from this server; results are built with textContent (no HTML from data).
"use strict";

const state = { model: null, files: [], classTexts: null };

function element(tag, attributes = {}, text = null) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== null) node.textContent = text;
  return node;
}

function showMessage(text) {
  const box = document.getElementById("message");
  box.textContent = text || "";
  box.hidden = !text;
}

function describeModel(model) {
  document.getElementById("title").textContent = `medcls: ${model.project}`;
  const thresholds = model.task !== "multi-label" ? "the most probable class is highlighted"
    : model.thresholds_exported ? "a finding is positive (highlighted) at or above its validation-tuned threshold, the black mark on its bar"
    : "a finding is positive (highlighted) at or above 0.5, the black mark on its bar: this export carries no tuned thresholds";
  document.getElementById("model-info").textContent =
    `${model.task} model, ${model.class_names.length} classes, ${model.spatial_dims}D input ` +
    `${model.input_size.join(" x ")}; ${thresholds}.`;
  const input = document.getElementById("files");
  input.accept = model.spatial_dims === 3 ? ".nii,.nii.gz,.gz" : "image/png,image/jpeg,image/tiff,.dcm,application/dicom";
  document.getElementById("upload-hint").textContent =
    `${model.spatial_dims === 3 ? "NIfTI volumes (.nii, .nii.gz)" : "PNG, JPEG, TIFF or DICOM images"}, ` +
    `up to ${model.max_files} files and ${model.max_upload_mb} MB per upload. Files are sent only to this ` +
    "computer's server and deleted after each prediction.";
  if (model.task === "zero-shot" && model.class_texts) {
    state.classTexts = { ...model.class_texts };
    fillClassTexts(model.class_texts);
    document.getElementById("class-texts").hidden = false;
  }
}

function fillClassTexts(texts) {
  const body = document.querySelector("#texts tbody");
  body.replaceChildren();
  for (const [name, text] of Object.entries(texts)) addClassRow(name, text);
}

function addClassRow(name = "", text = "") {
  const row = element("tr");
  const nameInput = element("input", { type: "text", class: "class-name", "aria-label": "class name" });
  const textInput = element("input", { type: "text", class: "class-text", "aria-label": "class text" });
  nameInput.value = name;
  textInput.value = text;
  const remove = element("button", { type: "button", class: "remove-class" }, "Remove");
  remove.addEventListener("click", () => row.remove());
  for (const cell of [nameInput, textInput, remove]) row.appendChild(element("td")).append(cell);
  document.querySelector("#texts tbody").append(row);
}

function editedClassTexts() {
  const texts = {};
  for (const row of document.querySelectorAll("#texts tbody tr")) {
    const name = row.querySelector(".class-name").value.trim();
    const text = row.querySelector(".class-text").value.trim();
    if (name || text) texts[name] = text;
  }
  return texts;
}

async function predict(files, heatmapClass = null) {
  const model = state.model;
  const tooLarge = files.reduce((sum, file) => sum + file.size, 0) > model.max_upload_mb * 2 ** 20;
  if (tooLarge) return { error: `these files are larger than this server's limit of ${model.max_upload_mb} MB; send fewer or smaller files` };
  if (files.length > model.max_files) return { error: `${files.length} files; this server takes at most ${model.max_files} at a time` };
  const form = new FormData();
  for (const file of files) form.append("files", file, file.name);
  if (state.classTexts) form.append("class_texts", JSON.stringify(state.classTexts));
  if (heatmapClass) form.append("heatmap_class", heatmapClass);
  try {
    const response = await fetch("/api/predict", { method: "POST", body: form });
    const body = await response.json().catch(() => ({ error: `the server answered ${response.status} without a result` }));
    return body;
  } catch (err) {
    return { error: `the server did not answer (${err.message}); is python -m shared.serve still running?` };
  }
}

function probabilityRow(result, name, model, index) {
  const probability = result.probabilities[name];
  const positive = result.positive.includes(name);
  const threshold = model.task === "multi-label" ? model.thresholds[model.class_names.indexOf(name)] : null;
  const row = element("tr", { "data-class": name, "data-probability": String(probability), title: "show this class's heatmap" });
  if (positive) row.classList.add("positive");
  const bar = element("span", { class: "bar" });
  const fill = bar.appendChild(element("span", { class: "fill" }));
  fill.style.width = `${(100 * probability).toFixed(1)}%`;
  if (threshold !== null) {
    const tick = bar.appendChild(element("span", { class: "threshold", title: `threshold ${threshold.toFixed(3)}` }));
    tick.style.left = `${(100 * threshold).toFixed(1)}%`;
  }
  row.append(element("td", {}, name), element("td", { class: "number" }, probability.toFixed(3)));
  row.appendChild(element("td")).append(bar);
  row.append(element("td", { class: "number" }, threshold === null ? "" : threshold.toFixed(3)));
  row.addEventListener("click", () => refreshHeatmap(index, name));
  return row;
}

function resultCard(result, index) {
  const card = element("article", { class: "result", "data-file": result.file });
  card.append(element("h2", {}, result.file));
  if (result.error) {
    card.append(element("p", { class: "error" }, result.error));
    return card;
  }
  const model = state.model;
  const body = card.appendChild(element("div", { class: result.heatmap_png ? "result-body" : "result-body no-heatmap" }));
  if (result.heatmap_png) {
    const figure = body.appendChild(element("figure", { class: "heatmap-figure" }));
    figure.append(element("img", { class: "heatmap", src: `data:image/png;base64,${result.heatmap_png}`,
                                   alt: `Grad-CAM heatmap of ${result.heatmap_class} over ${result.file}` }));
    figure.append(element("figcaption", {}, `Where the model looked for ${result.heatmap_class} ` +
                          `(${result.probabilities[result.heatmap_class].toFixed(3)}); click a row for another class.`));
  }
  const table = body.appendChild(element("table", { class: "probabilities" }));
  const head = table.appendChild(element("thead")).appendChild(element("tr"));
  for (const title of ["Class", "Probability", "", model.task === "multi-label" ? "Threshold" : ""]) head.append(element("th", {}, title));
  const rows = table.appendChild(element("tbody"));
  const names = Object.keys(result.probabilities).sort((a, b) => result.probabilities[b] - result.probabilities[a]);
  for (const name of names) rows.append(probabilityRow(result, name, model, index));
  return card;
}

async function refreshHeatmap(index, name) {
  document.getElementById("busy").hidden = false;
  const body = await predict([state.files[index]], name);
  document.getElementById("busy").hidden = true;
  if (body.results && body.results[0]) {
    const card = document.querySelectorAll("#results .result")[index];
    card.replaceWith(resultCard(body.results[0], index));
  } else showMessage(body.error);
}

async function run() {
  if (!state.files.length) return;
  showMessage("");
  document.getElementById("busy").hidden = false;
  const body = await predict(state.files);
  document.getElementById("busy").hidden = true;
  const results = document.getElementById("results");
  results.replaceChildren();
  if (!body.results) {
    showMessage(body.error);
    return;
  }
  if (body.error) showMessage(body.error);
  body.results.forEach((result, index) => results.append(resultCard(result, index)));
  results.setAttribute("data-done", String(Date.now()));
}

async function start() {
  try {
    const response = await fetch("/api/model");
    state.model = await response.json();
  } catch (err) {
    showMessage(`cannot reach the server (${err.message})`);
    return;
  }
  describeModel(state.model);
  document.getElementById("files").addEventListener("change", (event) => {
    state.files = Array.from(event.target.files);
    run();
  });
  document.getElementById("add-class").addEventListener("click", () => addClassRow());
  document.getElementById("apply-texts").addEventListener("click", () => {
    state.classTexts = editedClassTexts();
    run();
  });
  document.getElementById("reset-texts").addEventListener("click", () => {
    state.classTexts = { ...state.model.class_texts };
    fillClassTexts(state.model.class_texts);
    run();
  });
  document.body.setAttribute("data-ready", "true");
}

start();
