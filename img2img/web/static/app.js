// img2img web page: pick images, queue jobs, follow their progress, compare before and after.
// No build step and no libraries: plain DOM code. URLs are relative so the app can be mounted
// under any prefix. The server's API is described in docs/web.md.
"use strict";

const $ = (selector) => document.querySelector(selector);
const state = {
  models: [],          // from api/models: {id, label, task, origin, direction, scale, denoise_default}
  limits: {},          // {max_bytes, max_pixels}
  suffixes: [],        // supported file suffixes
  picked: [],          // File objects waiting for Run
  jobs: new Map(),     // id -> job record from the server
  uploadErrors: 0,
};

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function setStatus(text) { $("#status").textContent = text; }

// ------------------------------------------------------------------------- models

async function loadModels() {
  const response = await fetch("api/models");
  const data = await response.json();
  state.models = data.models;
  state.limits = data.limits;
  state.suffixes = data.suffixes;
  fillModels();
}

function currentTask() { return document.querySelector("input[name=task]:checked").value; }

function modelsForTask(task) {
  return state.models.filter((m) => m.task === task || m.task === "any");
}

function fillModels() {
  const select = $("#model");
  const previous = select.value;
  const models = modelsForTask(currentTask());
  select.replaceChildren(...models.map((m) => el("option", { value: m.id }, m.label)));
  if (models.some((m) => m.id === previous)) select.value = previous;
  $("#no-models").hidden = models.length > 0;
  select.disabled = models.length === 0;
  const box = $("#compare-models");
  box.replaceChildren(el("legend", {}, "Models"), ...models.map((m, i) =>
    el("label", { class: "compare-choice" },
      el("input", { type: "checkbox", value: m.id, checked: i < 2 }), " ", m.label, el("br"))));
  fillStrength();
  updateButtons();
}

// The model's own denoise strength (its blend with a real-world companion): only for models whose
// card declares one; the note says the card's default.
function fillStrength() {
  const model = state.models.find((m) => m.id === $("#model").value);
  const paired = Boolean(model) && model.denoise_default !== null && model.denoise_default !== undefined;
  $("#strength").disabled = !paired;
  if (!paired) $("#strength").value = "";
  $("#strength-note").textContent = paired ? `default ${model.denoise_default}` : "this model has no real-world companion";
}

// ------------------------------------------------------------------------- picking files

function isImageName(name) {
  const dot = name.lastIndexOf(".");
  return dot >= 0 && state.suffixes.includes(name.slice(dot).toLowerCase());
}

function addFiles(files, fromFolder) {
  for (const file of files) {
    // A folder brings everything in it: keep its images, skip the rest quietly.
    if (fromFolder && !isImageName(file.name)) continue;
    state.picked.push(file);
  }
  renderPicked();
}

function displayName(file) { return file.webkitRelativePath || file.name; }

function renderPicked() {
  const list = $("#picked");
  list.replaceChildren(...state.picked.map((file, i) =>
    el("li", {}, displayName(file), " ",
      el("button", { type: "button", "aria-label": `Remove ${displayName(file)}`,
        onclick: () => { state.picked.splice(i, 1); renderPicked(); } }, "×"))));
  $("#picked-empty").hidden = state.picked.length > 0;
  updateButtons();
}

function updateButtons() {
  const noModel = $("#model").disabled;
  $("#compare-run").disabled = noModel;
}

// Files from a drop: folders are walked (webkitGetAsEntry), files taken as they are.
async function droppedFiles(dataTransfer) {
  const entries = [...dataTransfer.items].map((item) => item.webkitGetAsEntry && item.webkitGetAsEntry());
  if (!entries.length || entries.some((e) => !e)) return { files: [...dataTransfer.files], folder: false };
  const files = [];
  async function walk(entry, prefix) {
    if (entry.isFile) {
      const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
      Object.defineProperty(file, "webkitRelativePath", { value: prefix + file.name });
      files.push(file);
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
        if (!batch.length) break;
        for (const child of batch) await walk(child, `${prefix}${entry.name}/`);
      }
    }
  }
  for (const entry of entries) await walk(entry, "");
  return { files, folder: entries.some((e) => e.isDirectory) };
}

// ------------------------------------------------------------------------- submitting

function options() {
  return {
    scale: $("#scale").value,
    denoise: $("#denoise").value,
    strength: $("#strength").disabled ? "" : $("#strength").value,
    tile: $("#tile").value.trim() || "auto",
    overlap: $("#overlap").value.trim(),
    format: $("#format").value,
  };
}

function uploadError(name, reason) {
  state.uploadErrors += 1;
  $("#queue").append(el("li", { class: "job", dataset: { status: "failed" } },
    el("p", { "data-testid": "error", role: "alert" }, `${name}: ${reason}`)));
  $("#queue-empty").hidden = true;
}

async function submit(file, modelIds) {
  const name = displayName(file);
  if (!isImageName(file.name)) {
    uploadError(name, `not a supported image file (supported: ${state.suffixes.join(", ")})`);
    return;
  }
  if (file.size > state.limits.max_bytes) {
    const mb = (n) => (n / 2 ** 20).toFixed(1);
    uploadError(name, `${mb(file.size)} MB is over this server's limit of ${mb(state.limits.max_bytes)} MB per image`);
    return;
  }
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("name", name);
  for (const id of modelIds) form.append("model", id);
  for (const [key, value] of Object.entries(options())) form.append(key, value);
  let response;
  try {
    response = await fetch("api/jobs", { method: "POST", body: form, headers: { "x-img2img": "1" } });
  } catch (err) {
    uploadError(name, "the server could not be reached");
    return;
  }
  const data = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) { uploadError(name, data.error || `HTTP ${response.status}`); return; }
  for (const job of data.jobs) upsertJob(job);
}

async function run() {
  if (!state.picked.length) { setStatus("Choose one or more images first."); return; }
  if ($("#model").disabled) { setStatus("No model for this task."); return; }
  const files = state.picked.splice(0);
  renderPicked();
  setStatus(`Uploading ${files.length} image(s)…`);
  for (const file of files) await submit(file, [$("#model").value]);
  setStatus("");
}

async function compare() {
  const ids = [...document.querySelectorAll("#compare-models input:checked")].map((box) => box.value);
  if (!state.picked.length) { setStatus("Choose an image to compare models on."); return; }
  if (ids.length < 2) { setStatus("Tick at least two models to compare."); return; }
  const file = state.picked.shift();
  renderPicked();
  await submit(file, ids);
}

async function post(url, method = "POST") {
  await fetch(url, { method, headers: { "x-img2img": "1" } });
}

// ------------------------------------------------------------------------- jobs and events

// Upload replies and the event stream race: never let an older state overwrite a newer one.
const STAGE = { queued: 0, running: 1, done: 2, failed: 2, cancelled: 2 };
function isStale(job, known) {
  if (!known) return false;
  if (STAGE[job.status] !== STAGE[known.status]) return STAGE[job.status] < STAGE[known.status];
  return job.status === "running" && job.done < known.done;
}

function upsertJob(job) {
  if (isStale(job, state.jobs.get(job.id))) return;
  state.jobs.set(job.id, job);
  renderJob(job);
  if (job.status === "done") renderResult(job);
  updateDownloadAll();
}

function renderJob(job) {
  let row = document.querySelector(`#queue li[data-job="${job.id}"]`);
  if (!row) {
    row = el("li", { class: "job", dataset: { job: job.id } },
      el("span", { class: "name" }), " — ", el("span", { class: "model" }), " ",
      el("span", { class: "state" }), el("br"),
      el("progress", { "data-testid": "progress", max: 1, value: 0, "aria-label": `progress of ${job.name}` }),
      el("button", { type: "button", class: "cancel", onclick: () => post(`api/jobs/${job.id}/cancel`) }, "Cancel"),
      el("button", { type: "button", class: "remove", "aria-label": `Remove ${job.name} and its result`,
        onclick: () => post(`api/jobs/${job.id}`, "DELETE") }, "Remove"));
    $("#queue").append(row);
    $("#queue-empty").hidden = true;
  }
  row.dataset.status = job.status;
  row.querySelector(".name").textContent = job.name;
  row.querySelector(".model").textContent = job.model_label;
  const progress = row.querySelector("progress");
  if (job.total > 0) { progress.max = job.total; progress.value = job.done; }
  if (job.status === "done" && !job.total) { progress.max = 1; progress.value = 1; }
  row.querySelector(".state").textContent = stateText(job);
  const waiting = job.status === "queued" || job.status === "running";
  row.querySelector(".cancel").hidden = !waiting;
  row.querySelector(".remove").hidden = waiting;
  const old = row.querySelector("[data-testid=error]");
  if (job.status === "failed" && !old) {
    row.append(el("p", { "data-testid": "error", role: "alert" }, `${job.name}: ${job.error}`));
  }
}

function stateText(job) {
  switch (job.status) {
    case "queued": return "waiting";
    case "running": return job.total ? `running: ${job.done}/${job.total} tiles` : "loading…";
    case "done": return `done in ${job.seconds.toFixed(1)} s`;
    default: return job.status;  // failed, cancelled
  }
}

function connect() {
  const source = new EventSource("api/events");
  source.onopen = () => setStatus("");
  source.onerror = () => setStatus("Connection to the server lost; retrying…");
  source.onmessage = (message) => {
    const event = JSON.parse(message.data);
    if (event.type === "snapshot") event.jobs.forEach(upsertJob);
    else if (event.type === "job") upsertJob(event.job);
    else if (event.type === "removed") {
      state.jobs.delete(event.id);
      document.querySelectorAll(`[data-job="${event.id}"]`).forEach((node) => node.remove());
      document.querySelectorAll(".results-group").forEach((group) => { if (!group.querySelector("figure")) group.remove(); });
      $("#queue-empty").hidden = $("#queue").children.length > 0;
      updateDownloadAll();
    }
  };
}

function updateDownloadAll() {
  const done = [...state.jobs.values()].filter((job) => job.status === "done");
  const link = $("#download-all");
  link.hidden = done.length === 0;
  link.href = `api/download.zip?ids=${done.map((job) => job.id).join(",")}`;
  link.setAttribute("download", "img2img-results.zip");
  $("#results-empty").hidden = done.length > 0;
}

// ------------------------------------------------------------------------- results

function renderResult(job) {
  if (document.querySelector(`figure[data-job="${job.id}"]`)) return;
  const figure = resultFigure(job);
  if (!job.group) { $("#results").prepend(figure); return; }
  let group = document.querySelector(`.results-group[data-group="${job.group}"]`);
  if (!group) {
    group = el("section", { class: "results-group", dataset: { group: job.group } },
      el("h3", {}, `${job.name}: models side by side`), el("div", { class: "side-by-side" }));
    $("#results").prepend(group);
  }
  group.querySelector(".side-by-side").append(figure);
}

function resultFigure(job) {
  const split = el("div", { class: "divider", role: "slider", tabindex: 0, "aria-label": `before/after divider for ${job.name}`,
    "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": 50, "aria-valuetext": "50% before" });
  const after = el("img", { class: "after", "data-testid": "result", src: `api/jobs/${job.id}/after`,
    alt: `${job.name} through ${job.model_label}` });
  const compareBox = el("div", { class: "compare", "data-testid": "compare" },
    after,
    el("div", { class: "before-clip" }, el("img", { class: "before", src: `api/jobs/${job.id}/before`, alt: `${job.name} before` })),
    el("span", { class: "label before" }, "before"), el("span", { class: "label after" }, "after"),
    split);
  const viewport = el("div", { class: "viewport", tabindex: 0, "aria-label": `${job.name}: result view (arrow keys pan at 1:1)` }, compareBox);
  const zoom = el("button", { type: "button", class: "zoom", "aria-pressed": "false" }, "1:1");
  const figure = el("figure", { class: "result", dataset: { job: job.id } },
    el("figcaption", {},
      el("strong", {}, job.name), el("span", { class: "meta" }, `${job.model_label} · ${job.width}×${job.height} · ${job.seconds.toFixed(1)} s`),
      el("a", { "data-testid": "download", href: `api/jobs/${job.id}/download`, download: job.download_name }, "Download"),
      zoom),
    viewport);
  wireCompare(compareBox, split, viewport, zoom, after);
  return figure;
}

function setSplit(box, split, percent) {
  percent = Math.max(0, Math.min(100, percent));
  box.style.setProperty("--split", `${percent}%`);
  split.setAttribute("aria-valuenow", Math.round(percent));
  split.setAttribute("aria-valuetext", `${Math.round(percent)}% before`);
}

function wireCompare(box, split, viewport, zoom, after) {
  const percentAt = (event) => {
    const rect = box.getBoundingClientRect();
    return ((event.clientX - rect.left) / rect.width) * 100;
  };
  split.addEventListener("pointerdown", (event) => {
    event.preventDefault();
    event.stopPropagation();
    split.setPointerCapture(event.pointerId);
    split.focus();
  });
  split.addEventListener("pointermove", (event) => {
    if (split.hasPointerCapture(event.pointerId)) setSplit(box, split, percentAt(event));
  });
  split.addEventListener("keydown", (event) => {
    const now = Number(split.getAttribute("aria-valuenow"));
    const step = event.shiftKey ? 10 : 2;
    const moves = { ArrowLeft: now - step, ArrowDown: now - step, ArrowRight: now + step, ArrowUp: now + step, Home: 0, End: 100 };
    if (event.key in moves) { event.preventDefault(); event.stopPropagation(); setSplit(box, split, moves[event.key]); }
  });
  // Not zoomed: a click moves the divider there. Zoomed (1:1): dragging pans.
  let pan = null;
  viewport.addEventListener("pointerdown", (event) => {
    if (!viewport.classList.contains("zoomed")) { setSplit(box, split, percentAt(event)); return; }
    pan = { x: event.clientX, y: event.clientY, left: viewport.scrollLeft, top: viewport.scrollTop };
    viewport.setPointerCapture(event.pointerId);
  });
  viewport.addEventListener("pointermove", (event) => {
    if (!pan) return;
    viewport.scrollLeft = pan.left - (event.clientX - pan.x);
    viewport.scrollTop = pan.top - (event.clientY - pan.y);
  });
  viewport.addEventListener("pointerup", () => { pan = null; });
  viewport.addEventListener("keydown", (event) => {
    const moves = { ArrowLeft: [-40, 0], ArrowRight: [40, 0], ArrowUp: [0, -40], ArrowDown: [0, 40] };
    if (!viewport.classList.contains("zoomed") || !(event.key in moves) || event.target !== viewport) return;
    event.preventDefault();
    viewport.scrollBy(...moves[event.key]);
  });
  viewport.addEventListener("scroll", () => syncScroll(viewport));
  zoom.addEventListener("click", () => {
    const on = !viewport.classList.contains("zoomed");
    viewport.classList.toggle("zoomed", on);
    zoom.setAttribute("aria-pressed", String(on));
    // 1:1 means one result pixel per device pixel.
    box.style.width = on ? `${after.naturalWidth / window.devicePixelRatio}px` : "";
  });
}

// Figures of one comparison pan together at 1:1.
function syncScroll(source) {
  const group = source.closest(".results-group");
  if (!group || source.dataset.syncing) return;
  for (const other of group.querySelectorAll(".viewport.zoomed")) {
    if (other === source) continue;
    other.dataset.syncing = "1";
    other.scrollLeft = source.scrollLeft;
    other.scrollTop = source.scrollTop;
    requestAnimationFrame(() => delete other.dataset.syncing);
  }
}

// ------------------------------------------------------------------------- start

function start() {
  const fileInput = $("#file-input");
  const folderInput = $("#folder-input");
  $("#pick-files").addEventListener("click", () => fileInput.click());
  $("#pick-folder").addEventListener("click", () => folderInput.click());
  fileInput.addEventListener("change", () => { addFiles(fileInput.files, false); fileInput.value = ""; });
  folderInput.addEventListener("change", () => { addFiles(folderInput.files, true); folderInput.value = ""; });
  const drop = $("#drop");
  drop.addEventListener("keydown", (event) => {
    if ((event.key === "Enter" || event.key === " ") && event.target === drop) { event.preventDefault(); fileInput.click(); }
  });
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", async (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const { files, folder } = await droppedFiles(event.dataTransfer);
    addFiles(files, folder);
  });
  for (const radio of document.querySelectorAll("input[name=task]")) radio.addEventListener("change", fillModels);
  $("#model").addEventListener("change", fillStrength);
  $("#denoise").addEventListener("input", () => {
    const value = Number($("#denoise").value);
    $("#denoise-value").textContent = value ? value.toFixed(2) : "off";
  });
  $("#run").addEventListener("click", run);
  $("#compare-run").addEventListener("click", compare);
  loadModels().then(connect).catch(() => setStatus("Could not load the model list from the server."));
}

document.addEventListener("DOMContentLoaded", start);
