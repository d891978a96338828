// The page: choose audio and a model, follow the job, then listen to and download the
// stems. Everything that came from a user or the server is written with textContent.

import * as api from "./api.js";
import * as history from "./history.js";
import { Mixer } from "./mixer.js";
import { Waveform } from "./waveform.js";

const POLL_MS = 500;
const TERMINAL = new Set(["completed", "failed"]);

const $ = (id) => document.getElementById(id);

const state = {
  config: null,
  file: null,
  choices: new Map(), // option value -> form fields of the request
  jobId: null,
  poll: null,
  mixer: null,
  waveforms: new Map(),
  urls: [],
  frame: null,
};

// -- messages --------------------------------------------------------------------------

function showError(error) {
  const box = $("error");
  if (error instanceof api.ApiError) {
    $("error-title").textContent = error.title;
    $("error-text").textContent = error.message;
    box.dataset.code = error.code;
    if (error.code === "unauthorized") {
      $("key-form").hidden = false;
      $("api-key").focus();
    }
  } else {
    $("error-title").textContent = "Something went wrong.";
    $("error-text").textContent = String(error && error.message ? error.message : error);
    box.dataset.code = "page";
  }
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error-title").textContent = "";
  $("error-text").textContent = "";
}

function seconds(value) {
  const minutes = Math.floor(value / 60);
  const rest = (value - minutes * 60).toFixed(1).padStart(4, "0");
  return `${minutes}:${rest}`;
}

function megabytes(bytes) {
  const mb = bytes / (1024 * 1024);
  return `${mb.toFixed(mb < 10 ? 1 : 0)} MB`;
}

function span(total) {
  return total < 120 ? `${Math.round(total)} s` : `${Math.round(total / 60)} min`;
}

// -- the request form ------------------------------------------------------------------

function categoryOf(model) {
  if (typeof model.category === "string" && model.category) {
    return model.category;
  }
  if (Array.isArray(model.categories) && model.categories.length) {
    return String(model.categories[0]);
  }
  return model.arch ? String(model.arch) : "other";
}

function stemsOf(item) {
  return Array.isArray(item.stems) ? item.stems.map(String) : [];
}

function describe(item) {
  const parts = [];
  if (item.description) {
    parts.push(String(item.description));
  }
  const stems = stemsOf(item);
  if (stems.length) {
    parts.push(`stems: ${stems.join(", ")}`);
  }
  if (item.license) {
    parts.push(`licence: ${item.license}`);
  }
  if (Array.isArray(item.missing) && item.missing.length) {
    parts.push(`not on this server: ${item.missing.join(", ")}`);
  }
  return parts.join(" · ");
}

function option(value, label, info, fields) {
  const element = document.createElement("option");
  element.value = value;
  element.textContent = label;
  state.choices.set(value, { fields, info });
  return element;
}

/** Fill the model list from GET /models: models grouped by category, then presets. */
function renderModels(body) {
  const select = $("model");
  select.replaceChildren();
  state.choices.clear();
  const groups = new Map();
  for (const model of Array.isArray(body.models) ? body.models : []) {
    if (!model || typeof model.name !== "string") {
      continue;
    }
    const category = categoryOf(model);
    if (!groups.has(category)) {
      const group = document.createElement("optgroup");
      group.label = category;
      groups.set(category, group);
    }
    const stems = stemsOf(model);
    const label = stems.length ? `${model.name} (${stems.join(", ")})` : model.name;
    groups
      .get(category)
      .append(option(`model:${model.name}`, label, describe(model), { model: model.name }));
  }
  for (const category of [...groups.keys()].sort()) {
    select.append(groups.get(category));
  }
  const presets = Array.isArray(body.presets) ? body.presets : [];
  if (presets.length) {
    const group = document.createElement("optgroup");
    group.label = "presets";
    for (const preset of presets) {
      const item = typeof preset === "string" ? { name: preset } : preset;
      if (item && typeof item.name === "string") {
        const element = option(`preset:${item.name}`, item.name, describe(item), {
          pipeline: item.name,
        });
        // A preset whose models this server lacks is shown, not offered: it would fail.
        element.disabled = item.installed === false;
        group.append(element);
      }
    }
    select.append(group);
  }
  if (body.default && state.choices.has(`model:${body.default}`)) {
    select.value = `model:${body.default}`;
  }
  showModelInfo();
  updateStart();
}

function showModelInfo() {
  const choice = state.choices.get($("model").value);
  $("model-info").textContent = choice ? choice.info : "";
}

function renderFormats(config) {
  const select = $("format");
  select.replaceChildren();
  for (const format of config.output_formats) {
    const element = document.createElement("option");
    element.value = format;
    element.textContent = format;
    select.append(element);
  }
  select.value = config.default_format;
  $("limits").textContent =
    `Up to ${megabytes(config.max_upload_bytes)} and ${span(config.max_duration)} of audio.`;
}

async function loadModels() {
  try {
    renderModels(await api.models());
    clearError();
  } catch (error) {
    $("model").replaceChildren();
    state.choices.clear();
    updateStart();
    showError(error);
  }
}

function source() {
  const url = $("url").value.trim();
  return state.file || url || null;
}

function updateStart() {
  $("start").disabled = !(source() && state.choices.has($("model").value));
}

function chooseFile(file) {
  state.file = file || null;
  $("file-name").textContent = file ? `${file.name} (${megabytes(file.size)})` : "";
  if (file) {
    $("url").value = "";
  }
  clearError();
  updateStart();
}

async function start() {
  const audio = source();
  const choice = state.choices.get($("model").value);
  if (!audio || !choice) {
    return;
  }
  clearError();
  $("start").disabled = true;
  const fields = { ...choice.fields, output_format: $("format").value };
  try {
    const answer = await api.submit(audio, fields);
    history.remember({
      job_id: answer.job_id,
      name: typeof audio === "string" ? audio : audio.name,
      choice: fields.model || fields.pipeline,
      output_format: fields.output_format,
      submitted_at: new Date().toISOString(),
      status: answer.status,
    });
    renderHistory();
    openJob(answer.job_id);
  } catch (error) {
    showError(error);
  } finally {
    updateStart();
  }
}

// -- the job ---------------------------------------------------------------------------

function between(start, end) {
  const from = Date.parse(start);
  const to = end ? Date.parse(end) : Date.now();
  return Number.isFinite(from) && Number.isFinite(to) ? Math.max(0, (to - from) / 1000) : null;
}

/** The job's times so far: how long it waited in the queue, ran, and took in all. */
function timing(job) {
  const facts = [];
  const waited = between(job.created_at, job.started_at);
  const ran = job.started_at ? between(job.started_at, job.finished_at) : null;
  if (waited !== null) {
    facts.push(`${job.started_at ? "waited" : "waiting"} ${waited.toFixed(1)} s`);
  }
  if (ran !== null) {
    facts.push(`${job.finished_at ? "ran" : "running"} ${ran.toFixed(1)} s`);
  }
  const total = job.finished_at ? between(job.created_at, job.finished_at) : null;
  if (total !== null) {
    facts.push(`took ${total.toFixed(1)} s`);
  }
  return facts;
}

function progressText(progress) {
  if (!progress) {
    return "";
  }
  const parts = [];
  if (progress.step !== undefined && progress.step !== null) {
    const of = progress.steps ? `/${progress.steps}` : "";
    const name = progress.step_name ? ` (${progress.step_name})` : "";
    parts.push(`step ${progress.step}${of}${name}`);
  }
  if (progress.stage) {
    parts.push(String(progress.stage));
  }
  if (typeof progress.fraction === "number") {
    parts.push(`${Math.round(progress.fraction * 100)} %`);
  }
  return parts.join(" · ");
}

function renderJob(job) {
  const section = $("job");
  section.dataset.status = job.status;
  const stateText = {
    queued: `Queued${job.queue_position ? `, position ${job.queue_position}` : ""}`,
    running: "Separating",
    completed: "Done",
    failed: "Failed",
  }[job.status] || String(job.status);
  const detail = job.status === "running" ? progressText(job.progress) : "";
  $("job-state").textContent = detail ? `${stateText}: ${detail}` : stateText;
  const bar = $("job-progress");
  if (job.status === "completed") {
    bar.value = 1;
  } else if (job.progress && typeof job.progress.fraction === "number") {
    bar.value = job.progress.fraction;
  } else {
    bar.removeAttribute("value");
  }
  bar.hidden = job.status === "failed";
  const facts = [`model ${job.model}`, `output ${job.output_format}`, ...timing(job)];
  if (job.attempts > 1) {
    facts.push(`attempt ${job.attempts} of ${job.max_attempts}`);
  }
  $("job-detail").textContent = facts.join(" · ");
  if (job.status === "failed" && job.error) {
    showError(new api.ApiError(0, job.error.code, job.error.message));
  }
}

function stopPolling() {
  if (state.poll) {
    clearTimeout(state.poll);
    state.poll = null;
  }
}

async function pollJob(jobId) {
  if (state.jobId !== jobId) {
    return;
  }
  let job;
  try {
    job = await api.job(jobId);
  } catch (error) {
    if (error.code === "not_found") {
      history.setStatus(jobId, "expired");
      renderHistory();
      $("job-state").textContent = "This job is no longer on the server (expired or deleted).";
      $("job").dataset.status = "gone";
      return;
    }
    showError(error);
    state.poll = setTimeout(() => pollJob(jobId), POLL_MS * 4);
    return;
  }
  if (state.jobId !== jobId) {
    return;
  }
  renderJob(job);
  history.setStatus(jobId, job.status);
  renderHistory();
  if (job.status === "completed") {
    await loadStems(job);
  } else if (!TERMINAL.has(job.status)) {
    state.poll = setTimeout(() => pollJob(jobId), POLL_MS);
  }
}

function openJob(jobId) {
  stopPolling();
  closePlayer();
  clearError();
  state.jobId = jobId;
  window.history.replaceState(null, "", `#job=${encodeURIComponent(jobId)}`);
  const entry = history.entries().find((e) => e.job_id === jobId);
  $("job-title").textContent = entry && entry.name ? entry.name : jobId;
  $("job-state").textContent = "Loading…";
  $("job-detail").textContent = "";
  $("job").hidden = false;
  pollJob(jobId);
}

// -- the stems -------------------------------------------------------------------------

function closePlayer() {
  if (state.frame) {
    cancelAnimationFrame(state.frame);
    state.frame = null;
  }
  if (state.mixer) {
    state.mixer.close();
    state.mixer = null;
  }
  for (const url of state.urls) {
    URL.revokeObjectURL(url);
  }
  state.urls = [];
  state.waveforms.clear();
  $("stems").replaceChildren();
  $("player").hidden = true;
  $("player").dataset.state = "empty";
  $("play").textContent = "Play";
}

function newContext(samplerate) {
  try {
    return new AudioContext(samplerate ? { sampleRate: samplerate } : {});
  } catch {
    return new AudioContext();
  }
}

function toggle(button, name, setter) {
  const on = button.getAttribute("aria-pressed") !== "true";
  button.setAttribute("aria-pressed", String(on));
  setter(name, on);
  for (const [stem, waveform] of state.waveforms) {
    waveform.muted = !state.mixer.audible(stem);
    const row = waveform.canvas.closest("li");
    row.dataset.audible = String(!waveform.muted);
  }
  draw();
}

async function loadStem(jobId, result, name, mixer) {
  const row = $("stem-row").content.firstElementChild.cloneNode(true);
  row.dataset.stem = name;
  row.querySelector(".stem-name").textContent = name;
  $("stems").append(row);
  const blob = await api.stemFile(jobId, name);
  const buffer = await mixer.add(name, await blob.arrayBuffer());
  if (state.mixer !== mixer) {
    return; // another job was opened meanwhile
  }
  const url = URL.createObjectURL(blob);
  state.urls.push(url);
  const link = row.querySelector(".download");
  link.href = url;
  link.download = `${name}.${result.format}`;
  link.textContent = `Download ${result.format}`;
  const canvas = row.querySelector("canvas");
  const waveform = new Waveform(canvas, buffer);
  state.waveforms.set(name, waveform);
  row.dataset.duration = buffer.duration.toFixed(4);
  row.dataset.audible = "true";
  canvas.addEventListener("click", (event) => {
    mixer.seek(waveform.fractionAt(event) * mixer.duration);
    draw();
  });
  row.querySelector(".solo").addEventListener("click", (event) =>
    toggle(event.currentTarget, name, (stem, on) => mixer.setSolo(stem, on)),
  );
  row.querySelector(".mute").addEventListener("click", (event) =>
    toggle(event.currentTarget, name, (stem, on) => mixer.setMuted(stem, on)),
  );
}

async function loadStems(job) {
  const jobId = job.job_id;
  const result = job.result;
  const mixer = new Mixer(newContext(result.samplerate));
  state.mixer = mixer;
  mixer.onended = () => {
    $("play").textContent = "Play";
    $("player").dataset.state = "paused";
    draw();
  };
  $("player").hidden = false;
  $("player").dataset.state = "loading";
  try {
    for (const name of Object.keys(result.stems)) {
      if (state.mixer !== mixer) {
        return; // another job was opened meanwhile
      }
      await loadStem(jobId, result, name, mixer);
    }
  } catch (error) {
    if (state.mixer === mixer) {
      showError(error);
    }
    return;
  }
  if (state.mixer !== mixer) {
    return;
  }
  $("player").dataset.state = "paused";
  draw();
}

function draw() {
  const mixer = state.mixer;
  if (!mixer) {
    return;
  }
  const total = mixer.duration;
  const position = mixer.position;
  $("clock").textContent = `${seconds(position)} / ${seconds(total)}`;
  $("player").dataset.position = position.toFixed(3);
  for (const waveform of state.waveforms.values()) {
    waveform.draw(total ? position / total : 0);
  }
}

function animate() {
  draw();
  state.frame = state.mixer && state.mixer.playing ? requestAnimationFrame(animate) : null;
}

async function playPause() {
  const mixer = state.mixer;
  if (!mixer || $("player").dataset.state === "loading") {
    return;
  }
  if (mixer.playing) {
    mixer.pause();
    $("play").textContent = "Play";
    $("player").dataset.state = "paused";
    draw();
    return;
  }
  await mixer.play();
  $("play").textContent = "Pause";
  $("player").dataset.state = "playing";
  if (!state.frame) {
    animate();
  }
}

// -- history ---------------------------------------------------------------------------

function renderHistory() {
  const list = $("history-list");
  const entries = history.entries();
  list.replaceChildren();
  $("history-empty").hidden = entries.length > 0;
  for (const entry of entries) {
    const row = $("history-row").content.firstElementChild.cloneNode(true);
    row.dataset.jobId = entry.job_id;
    const open = row.querySelector(".open");
    open.textContent = entry.name || entry.job_id;
    open.addEventListener("click", () => openJob(entry.job_id));
    const when = entry.submitted_at ? new Date(entry.submitted_at).toLocaleString() : "";
    const meta = [entry.choice, entry.output_format, when, entry.status].filter(Boolean);
    row.querySelector(".entry-meta").textContent = meta.join(" · ");
    row.querySelector(".forget").addEventListener("click", () => forgetJob(entry.job_id));
    list.append(row);
  }
}

async function forgetJob(jobId) {
  try {
    await api.deleteJob(jobId);
  } catch (error) {
    if (error.code !== "not_found") {
      showError(error);
      return;
    }
  }
  history.forget(jobId);
  if (state.jobId === jobId) {
    stopPolling();
    closePlayer();
    state.jobId = null;
    $("job").hidden = true;
    window.history.replaceState(null, "", window.location.pathname);
  }
  renderHistory();
}

// -- wiring ----------------------------------------------------------------------------

function wire() {
  const drop = $("drop");
  // A file dropped anywhere else would make the browser navigate away from the page.
  for (const type of ["dragover", "drop"]) {
    window.addEventListener(type, (event) => event.preventDefault());
  }
  drop.addEventListener("dragover", () => drop.classList.add("over"));
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    drop.classList.remove("over");
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (file) {
      chooseFile(file);
    }
  });
  drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      $("file").click();
    }
  });
  $("file").addEventListener("change", (event) => chooseFile(event.target.files[0]));
  $("url").addEventListener("input", () => {
    if ($("url").value.trim()) {
      state.file = null;
      $("file").value = "";
      $("file-name").textContent = "";
    }
    updateStart();
  });
  $("model").addEventListener("change", () => {
    showModelInfo();
    updateStart();
  });
  $("start").addEventListener("click", start);
  $("play").addEventListener("click", playPause);
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    api.setApiKey($("api-key").value.trim());
    $("api-key").value = "";
    loadModels();
    if (state.jobId) {
      openJob(state.jobId);
    }
  });
  $("forget-key").addEventListener("click", () => {
    api.setApiKey("");
    $("api-key").value = "";
    loadModels();
  });
}

function jobFromHash() {
  const match = /^#job=(.+)$/.exec(window.location.hash);
  if (!match) {
    return null;
  }
  try {
    return decodeURIComponent(match[1]);
  } catch {
    return null;
  }
}

async function main() {
  wire();
  renderHistory();
  try {
    state.config = await api.pageConfig();
  } catch (error) {
    showError(error);
    return;
  }
  renderFormats(state.config);
  $("key-form").hidden = !state.config.auth_required;
  await loadModels();
  const jobId = jobFromHash();
  if (jobId) {
    openJob(jobId);
  }
  document.body.dataset.ready = "true";
}

main();
