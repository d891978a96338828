// This browser's jobs, kept in localStorage so that they survive a reload.
//
// Only what the page itself knew when it submitted a job is kept (its id, the file name
// or URL, the model, the format, when); the job's state always comes from the server.

const STORAGE = "dsu.history";
const LIMIT = 50;

function isEntry(value) {
  return value && typeof value === "object" && typeof value.job_id === "string";
}

export function entries() {
  try {
    const stored = JSON.parse(localStorage.getItem(STORAGE) || "[]");
    return Array.isArray(stored) ? stored.filter(isEntry) : [];
  } catch {
    return [];
  }
}

function save(list) {
  localStorage.setItem(STORAGE, JSON.stringify(list.slice(0, LIMIT)));
}

/** Add or refresh one entry (newest first); `fields` must hold job_id. */
export function remember(fields) {
  const list = entries();
  const index = list.findIndex((e) => e.job_id === fields.job_id);
  const entry = { ...(index >= 0 ? list[index] : {}), ...fields };
  if (index >= 0) {
    list.splice(index, 1);
  }
  list.unshift(entry);
  save(list);
  return entry;
}

/** Update the status shown for a job, keeping its place in the list. */
export function setStatus(jobId, status) {
  const list = entries();
  const entry = list.find((e) => e.job_id === jobId);
  if (entry && entry.status !== status) {
    entry.status = status;
    save(list);
  }
}

export function forget(jobId) {
  save(entries().filter((e) => e.job_id !== jobId));
}
