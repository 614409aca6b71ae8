// A terminal on a sandbox: xterm.js speaking the ttyd protocol over the daemon's WebSocket
// (`GET /v1/sandboxes/{id}/terminal`, subprotocol `tty`). The token goes in the first
// message, since a browser cannot set headers on a WebSocket. A dropped connection is
// re-attached to the same session, whose recent output the daemon replays.

import { Terminal } from "./vendor/xterm.mjs";
import { FitAddon } from "./vendor/addon-fit.mjs";
import { api, seg, token } from "./api.js";
import { h, replace, notify } from "./ui.js";

// ttyd's message types: the first byte of every frame, as an ASCII character.
const INPUT = "0";
const RESIZE = "1";
const PAUSE = "2";
const RESUME = "3";
const OUTPUT = "0";
const TITLE = "1";
const PREFERENCES = "2";

/** Close codes after which reconnecting cannot help. */
const FINAL_CLOSES = new Map([
  [1000, "The shell exited."],
  [4400, "The daemon did not understand the handshake."],
  [4408, "The handshake came too late."],
  [4401, "The daemon refused the token."],
  [4404, "No such sandbox or session."],
  [4409, "The sandbox is not running."],
]);

// Flow control as ttyd's own client does it: every LIMIT bytes written, wait for xterm.js
// to catch up; pause the shell when too many such writes are pending.
const LIMIT = 100_000;
const HIGH_WATER = 10;
const LOW_WATER = 4;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Mounts a terminal into `container`. Returns { focus(), dispose() }. `onLeave` is called
 * when the user presses Ctrl+] to move focus back to the page.
 */
export function mountTerminal(container, sandboxId, { onLeave } = {}) {
  const status = h("span", { class: "term-status", role: "status" }, "Connecting…");
  const sessions = h("select", { class: "term-sessions", "aria-label": "Terminal session", hidden: true });
  const newButton = h("button", { type: "button", onclick: () => connect(null) }, "New session");
  const closeButton = h("button", { type: "button", onclick: closeSession, disabled: true }, "Close session");
  const reconnectButton = h("button", { type: "button", hidden: true, onclick: () => connect(sessionId) }, "Reconnect");
  const screen = h("div", { class: "term-screen", "aria-label": "Terminal" });
  replace(container,
    h("div", { class: "term-bar" }, status, h("span", { class: "spacer" }), sessions, newButton, closeButton, reconnectButton),
    screen);

  const term = new Terminal({
    cursorBlink: true,
    fontFamily: 'ui-monospace, "DejaVu Sans Mono", "Liberation Mono", Menlo, monospace',
    fontSize: 14,
    scrollback: 5000,
    theme: { background: "#0d1117", foreground: "#e6edf3", cursor: "#e6edf3", selectionBackground: "#264f78" },
  });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(screen);
  term.attachCustomKeyEventHandler((event) => {
    if (event.type === "keydown" && event.ctrlKey && event.key === "]") {
      term.blur();
      onLeave?.();
      return false;
    }
    return true;
  });

  let socket = null;
  let sessionId = null;
  // The tab's session of this sandbox, so a reload re-attaches to the same shell.
  const storeKey = `nexus.terminal.${sandboxId}`;
  let resuming = false;
  let disposed = false;
  let retries = 0;
  let written = 0;
  let pending = 0;
  let paused = false;

  const send = (type, payload = "") => {
    if (socket?.readyState !== WebSocket.OPEN) return;
    socket.send(encoder.encode(type + payload));
  };

  term.onData((data) => {
    if (socket?.readyState !== WebSocket.OPEN) return;
    const payload = new Uint8Array(data.length * 3 + 1);
    payload[0] = INPUT.charCodeAt(0);
    const { written: n } = encoder.encodeInto(data, payload.subarray(1));
    socket.send(payload.subarray(0, n + 1));
  });
  term.onBinary((data) => {
    if (socket?.readyState !== WebSocket.OPEN) return;
    const payload = new Uint8Array(data.length + 1);
    payload[0] = INPUT.charCodeAt(0);
    for (let i = 0; i < data.length; i++) payload[i + 1] = data.charCodeAt(i) & 0xff;
    socket.send(payload);
  });
  term.onResize(({ cols, rows }) => send(RESIZE, JSON.stringify({ columns: cols, rows })));
  term.onTitleChange((title) => (screen.title = title));

  const observer = new ResizeObserver(() => {
    try {
      fit.fit();
    } catch {
      // Not laid out yet (hidden); the next resize fits it.
    }
  });
  observer.observe(screen);
  fit.fit();

  function write(data) {
    written += data.length;
    if (written <= LIMIT) {
      term.write(data);
      return;
    }
    written = 0;
    pending++;
    term.write(data, () => {
      pending = Math.max(pending - 1, 0);
      if (paused && pending < LOW_WATER) {
        paused = false;
        send(RESUME);
      }
    });
    if (!paused && pending > HIGH_WATER) {
      paused = true;
      send(PAUSE);
    }
  }

  function onMessage(event) {
    const bytes = typeof event.data === "string" ? encoder.encode(event.data) : new Uint8Array(event.data);
    if (bytes.length === 0) return;
    const type = String.fromCharCode(bytes[0]);
    const data = bytes.subarray(1);
    if (type === OUTPUT) {
      write(data);
    } else if (type === TITLE) {
      screen.title = decoder.decode(data);
    } else if (type === PREFERENCES) {
      try {
        const prefs = JSON.parse(decoder.decode(data));
        if (prefs?.nexus?.session) {
          sessionId = String(prefs.nexus.session);
          resuming = false;
          sessionStorage.setItem(storeKey, sessionId);
          closeButton.disabled = false;
          setStatus(`Connected · session ${sessionId}`, "ok");
          listSessions();
        }
      } catch {
        // Preferences the console does not use.
      }
    }
  }

  function setStatus(text, kind = "") {
    status.textContent = text;
    status.className = `term-status ${kind}`;
  }

  function connect(session) {
    if (disposed) return;
    if (socket) {
      socket.onclose = null;
      socket.close(1000);
    }
    if (session === null) {
      term.reset();
      sessionId = null;
      closeButton.disabled = true;
    }
    reconnectButton.hidden = true;
    written = 0;
    pending = 0;
    paused = false;
    setStatus(session ? `Re-attaching to session ${session}…` : "Connecting…");
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const q = session ? `?session=${encodeURIComponent(session)}` : "";
    const ws = new WebSocket(`${scheme}://${location.host}/v1/sandboxes/${seg(sandboxId)}/terminal${q}`, ["tty"]);
    ws.binaryType = "arraybuffer";
    socket = ws;
    ws.onopen = () => {
      retries = 0;
      ws.send(encoder.encode(JSON.stringify({ AuthToken: token() ?? "", columns: term.cols, rows: term.rows })));
      if (!sessionId) setStatus("Connected", "ok");
      if (session) term.reset(); // the daemon replays the session's recent screen
    };
    ws.onmessage = onMessage;
    ws.onclose = (event) => {
      if (socket !== ws || disposed) return;
      socket = null;
      if (resuming && ![4401, 4409].includes(event.code)) {
        // The remembered session is gone (closed, or the sandbox restarted): a new one.
        resuming = false;
        sessionStorage.removeItem(storeKey);
        connect(null);
        return;
      }
      resuming = false;
      const final = FINAL_CLOSES.get(event.code);
      if (final) {
        const reason = event.reason ? ` ${event.reason}` : "";
        setStatus(event.code === 1000 ? final : `${final}${reason}`, event.code === 1000 ? "" : "error");
        if (event.code === 1000) {
          sessionStorage.removeItem(storeKey);
          sessionId = null;
          closeButton.disabled = true;
          term.write("\r\n\x1b[2m[the shell exited; start a new session to go on]\x1b[0m\r\n");
        }
        reconnectButton.hidden = event.code === 4401 || event.code === 1000;
        listSessions();
        return;
      }
      if (sessionId && retries < 5) {
        retries++;
        setStatus(`Connection lost; re-attaching (try ${retries})…`, "warn");
        setTimeout(() => connect(sessionId), 500 * retries);
        return;
      }
      setStatus(`Disconnected${event.reason ? `: ${event.reason}` : ""}.`, "error");
      reconnectButton.hidden = false;
    };
  }

  async function listSessions() {
    let list;
    try {
      list = await api(`/v1/sandboxes/${seg(sandboxId)}/terminals`);
    } catch {
      sessions.hidden = true;
      return;
    }
    const items = list?.terminals ?? [];
    sessions.hidden = items.length === 0;
    replace(sessions, items.map((s) => {
      const id = String(s.id);
      const notes = [s.alive === false ? "ended" : null, s.attached ? `${s.attached} attached` : null].filter(Boolean);
      return h("option", { value: id, selected: id === sessionId },
        `Session ${id}${notes.length ? ` (${notes.join(", ")})` : ""}`);
    }));
  }
  sessions.addEventListener("change", () => {
    if (sessions.value && sessions.value !== sessionId) {
      sessionId = sessions.value;
      connect(sessionId);
    }
  });

  async function closeSession() {
    if (!sessionId) return;
    const id = sessionId;
    try {
      await api(`/v1/sandboxes/${seg(sandboxId)}/terminals/${seg(id)}`, { method: "DELETE" });
      if (sessionStorage.getItem(storeKey) === id) sessionStorage.removeItem(storeKey);
      notify(`Closed terminal session ${id}.`);
      listSessions();
    } catch (e) {
      notify(`Cannot close session ${id}: ${e.message}`, "error");
    }
  }

  const remembered = sessionStorage.getItem(storeKey);
  resuming = remembered !== null;
  connect(remembered);

  return {
    focus: () => term.focus(),
    /** Reconnects after the sandbox came back (e.g. started again). */
    restart: () => connect(null),
    dispose() {
      disposed = true;
      observer.disconnect();
      if (socket) {
        socket.onclose = null;
        socket.close(1000);
      }
      term.dispose();
    },
  };
}
