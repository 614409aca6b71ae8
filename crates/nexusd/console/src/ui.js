// DOM and formatting helpers shared by every page of the console.

/**
 * Builds an element: h("button", { class: "x", onclick: fn }, "text", child).
 * Attributes starting with "on" become listeners; `null`/`false` attributes are skipped;
 * children may be strings, nodes, arrays or null.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (value === true) {
      el.setAttribute(key, "");
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces every child of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

/** "1.5 KiB", "12 MiB"; "–" when unknown. */
export function bytes(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

/** "42s", "5m", "3h", "2d" since an RFC 3339 time. */
export function age(time, now = Date.now()) {
  const t = Date.parse(time);
  if (Number.isNaN(t)) return "–";
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

/** "12%" of one core; "–" when unknown. */
export function percent(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  return `${n < 10 ? n.toFixed(1) : Math.round(n)}%`;
}

/** A local date and time for a tooltip or a log line. */
export function time(value) {
  const t = new Date(value);
  return Number.isNaN(t.getTime()) ? String(value) : t.toLocaleString();
}

/** A state as a coloured badge. */
export function stateBadge(state) {
  return h("span", { class: `state state-${state}` }, state);
}

/**
 * Shows a message in the page's status area: kind "error" or "info". Errors stay until
 * replaced; information fades after a few seconds.
 */
export function notify(message, kind = "info") {
  const area = document.getElementById("notice");
  if (!area) return;
  const item = h("div", { class: `notice notice-${kind}`, role: kind === "error" ? "alert" : "status" },
    h("span", {}, message),
    h("button", { type: "button", class: "link", "aria-label": "Dismiss", onclick: () => item.remove() }, "×"));
  area.replaceChildren(item);
  if (kind !== "error") setTimeout(() => item.remove(), 4000);
}

/** Clears the status area. */
export function clearNotice() {
  document.getElementById("notice")?.replaceChildren();
}

/**
 * Asks a yes/no question in a modal dialog; resolves true when confirmed. Enter confirms,
 * Escape cancels; focus starts on Cancel so a stray Enter never deletes anything.
 */
export function confirmDialog(title, text, action = "Delete") {
  const dialog = document.getElementById("confirm");
  return new Promise((resolve) => {
    const cancel = h("button", { type: "button", value: "cancel", onclick: () => dialog.close("cancel") }, "Cancel");
    const ok = h("button", { type: "submit", value: "ok", class: "danger" }, action);
    const form = h("form", { method: "dialog" },
      h("h2", {}, title),
      h("p", {}, text),
      h("div", { class: "actions" }, cancel, ok));
    dialog.replaceChildren(form);
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
    cancel.focus();
  });
}

/** Calls `fn` now and then every `ms` until the returned function is called. */
export function every(ms, fn) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    if (stopped) return;
    try {
      await fn();
    } finally {
      if (!stopped) timer = setTimeout(tick, ms);
    }
  };
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

/** True when a key press happened in a place that takes text (so shortcuts stay out). */
export function typing(event) {
  const t = event.target;
  return t instanceof HTMLElement &&
    (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName) || t.closest(".term-screen"));
}
