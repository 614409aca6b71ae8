// The console's client of the nexusd HTTP API: same origin, bearer token from
// sessionStorage, errors turned into ApiError with the API's own code and message.

const TOKEN_KEY = "nexus.token";

/** An error answer of the API ({"error":{"code","message"}}) or a failed connection. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** Called when the daemon refuses the stored token (set by the app). */
let onUnauthorized = () => {};
export function whenUnauthorized(fn) {
  onUnauthorized = fn;
}

/**
 * Calls the API. `options.json` sends a JSON body; `options.body` a raw one;
 * `options.raw` returns the Response itself (for streams and downloads). Resolves to
 * the parsed JSON, or null for an empty answer.
 */
export async function api(path, options = {}) {
  const headers = new Headers(options.headers ?? {});
  const bearer = options.token ?? token();
  if (bearer) headers.set("Authorization", `Bearer ${bearer}`);
  let body = options.body;
  if (options.json !== undefined) {
    headers.set("Content-Type", "application/json");
    body = JSON.stringify(options.json);
  }
  let response;
  try {
    response = await fetch(path, { method: options.method ?? "GET", headers, body, signal: options.signal });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, "unreachable", "nexusd does not answer: is it still running?");
  }
  if (!response.ok) {
    const error = await errorOf(response);
    if (response.status === 401 && options.token === undefined) onUnauthorized(error);
    throw error;
  }
  if (options.raw) return response;
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

async function errorOf(response) {
  let code = `http_${response.status}`;
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body?.error) {
      code = body.error.code ?? code;
      message = body.error.message ?? message;
    }
  } catch {
    // Not the API's error shape (a proxy in between); keep the status line.
  }
  return new ApiError(response.status, code, message);
}

/** A path segment, escaped. */
export const seg = encodeURIComponent;

/** A query string from an object, skipping null and undefined values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined) q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

/**
 * Reads an NDJSON response line by line, calling `onLine` with each parsed object,
 * until the stream ends or `signal` aborts.
 */
export async function readLines(response, onLine) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffered += decoder.decode(value, { stream: true });
    let newline;
    while ((newline = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, newline).trim();
      buffered = buffered.slice(newline + 1);
      if (line) onLine(JSON.parse(line));
    }
  }
  if (buffered.trim()) onLine(JSON.parse(buffered));
}

/** Bytes of a base64 string. */
export function fromBase64(text) {
  const binary = atob(text);
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

/**
 * One sample of a sandbox's resource use, from `GET .../stats` (or, on a daemon without
 * that route, the `usage` of `GET /v1/sandboxes/{id}`). Every counter may be null: a host
 * that cannot measure it says so.
 */
export async function stats(id) {
  try {
    return normalizeStats(await api(`/v1/sandboxes/${seg(id)}/stats`));
  } catch (e) {
    if (e.status !== 404 || e.code !== "not_found") throw e;
    const sandbox = await api(`/v1/sandboxes/${seg(id)}`);
    const usage = sandbox.usage ?? {};
    return normalizeStats({ ...usage, cpu_usec: usage.cpu_usage_usec });
  }
}

function normalizeStats(raw) {
  const value = (v) => (v === undefined ? null : v);
  return {
    at: raw.timestamp_ms ?? Date.now(),
    cpuUsec: value(raw.cpu_usec),
    memory: value(raw.memory_bytes),
    memoryPeak: value(raw.memory_peak_bytes),
    memoryLimit: value(raw.memory_limit_bytes),
    pids: value(raw.pids),
    pidsLimit: value(raw.pids_limit),
    ioRead: value(raw.io_read_bytes),
    ioWrite: value(raw.io_write_bytes),
    oomKills: value(raw.oom_kills),
  };
}

/** CPU use between two samples, in percent of one core; null when unknown. */
export function cpuPercent(previous, current) {
  if (!previous || previous.cpuUsec === null || current.cpuUsec === null) return null;
  const elapsedUs = (current.at - previous.at) * 1000;
  if (elapsedUs <= 0) return null;
  return Math.max(0, ((current.cpuUsec - previous.cpuUsec) / elapsedUs) * 100);
}
