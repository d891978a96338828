// The service's HTTP API as the page uses it: the API key, requests, and error answers.
//
// Every URL is relative to the page's base, so the page talks to the server that served
// it (and nothing else: the Content-Security-Policy allows this origin only).

const KEY_STORAGE = "dsu.apiKey";

// What each error code of the API (dsu.service.errors) means to someone at the page.
const ERROR_TITLES = {
  payload_too_large: "The file is too large for this server.",
  audio_too_long: "The audio is too long for this server.",
  bad_audio: "The file is not audio this server can read.",
  unsupported_media_type: "Unsupported upload.",
  model_not_found: "Unknown model.",
  queue_full: "The queue is full.",
  unauthorized: "An API key is required.",
  url_not_allowed: "That URL may not be fetched.",
  fetch_failed: "The URL could not be fetched.",
  bad_request: "The request was refused.",
  not_found: "Not found.",
  gone: "The job is gone.",
  conflict: "Conflict.",
  cancelled: "The job was cancelled.",
  starting: "The service is starting.",
  interrupted: "The job was interrupted.",
  out_of_memory: "The server ran out of memory.",
  timeout: "The separation took too long.",
  request_timeout: "The upload took too long.",
  network: "The service cannot be reached.",
};

/** An error answer of the API, or a request that never got one. */
export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }

  get title() {
    const title = ERROR_TITLES[this.code] || `Error (HTTP ${this.status}).`;
    if (this.code === "queue_full" && this.retryAfter) {
      return `${title} Try again in ${this.retryAfter} s.`;
    }
    return title;
  }
}

export function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

export function setApiKey(key) {
  if (key) {
    sessionStorage.setItem(KEY_STORAGE, key);
  } else {
    sessionStorage.removeItem(KEY_STORAGE);
  }
}

async function errorOf(response) {
  let code = "error";
  let message = response.statusText || `HTTP ${response.status}`;
  try {
    const body = await response.json();
    if (body && body.error) {
      code = String(body.error.code || code);
      message = String(body.error.message || message);
    }
  } catch {
    // Not our JSON (a proxy's page): the status says enough.
  }
  return new ApiError(response.status, code, message, response.headers.get("Retry-After"));
}

/** fetch() a path of the API with the key; resolve to the Response, reject with ApiError. */
export async function request(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const key = apiKey();
  if (key) {
    headers.set("Authorization", `Bearer ${key}`);
  }
  let response;
  try {
    response = await fetch(path, { ...options, headers, cache: "no-store" });
  } catch (error) {
    throw new ApiError(0, "network", String(error.message || error));
  }
  if (!response.ok) {
    throw await errorOf(response);
  }
  return response;
}

export async function getJson(path) {
  return (await request(path)).json();
}

export function pageConfig() {
  return getJson("ui/config");
}

export function models() {
  return getJson("models");
}

export function job(jobId) {
  return getJson(`jobs/${encodeURIComponent(jobId)}`);
}

export function deleteJob(jobId) {
  return request(`jobs/${encodeURIComponent(jobId)}`, { method: "DELETE" });
}

/** The bytes of one stem of a completed job. */
export async function stemFile(jobId, stem) {
  const path = `jobs/${encodeURIComponent(jobId)}/files/${encodeURIComponent(stem)}`;
  return (await request(path)).blob();
}

/**
 * Queue a separation: `source` is a File or a URL string; `choice` holds the request's
 * other form fields (model or pipeline, output_format).
 */
export async function submit(source, choice) {
  const form = new FormData();
  if (typeof source === "string") {
    form.append("audio_url", source);
  } else {
    form.append("file", source, source.name);
  }
  for (const [name, value] of Object.entries(choice)) {
    if (value !== undefined && value !== null && value !== "") {
      form.append(name, value);
    }
  }
  return (await request("separate-async", { method: "POST", body: form })).json();
}
