// One sandbox: its summary and actions, live CPU and memory charts, a terminal, and tabs
// for its files, background processes and network log.

import { api, seg, stats, cpuPercent } from "./api.js";
import { h, replace, age, bytes, percent, stateBadge, notify, confirmDialog, every } from "./ui.js";
import { Sparkline } from "./charts.js";
import { mountTerminal } from "./terminal.js";
import { mountFiles } from "./files.js";
import { mountProcesses } from "./processes.js";
import { mountNetlog } from "./netlog.js";

const POLL_MS = 2000;
const TABS = [
  { key: "files", label: "Files", shortcut: "f", mount: mountFiles },
  { key: "processes", label: "Processes", shortcut: "p", mount: mountProcesses },
  { key: "network", label: "Network log", shortcut: "w", mount: mountNetlog },
];

export function mountSandbox(main, id, onName) {
  let sandbox = null;
  let terminal = null;
  let tab = null; // { key, panel, view }
  let previousSample = null;
  let gone = false;

  const title = h("h1", {}, id);
  const badge = h("span", {});
  const facts = h("dl", { class: "facts" });
  const actions = h("div", { class: "actions" });
  const cpu = new Sparkline("CPU", percent, { max: 100 });
  const memory = new Sparkline("Memory", bytes);
  const pids = h("span", { class: "spark-value" }, "–");
  const io = h("span", { class: "spark-value" }, "–");
  const oom = h("span", { class: "spark-detail" });
  const termBox = h("section", { class: "card terminal", "aria-label": "Terminal" });
  const tablist = h("div", { role: "tablist", "aria-label": "Sandbox details", class: "tabs" });
  const panel = h("div", { role: "tabpanel", class: "tab-panel", tabindex: "0" });

  replace(main,
    h("section", { class: "card summary" },
      h("div", { class: "summary-head" }, title, badge, h("span", { class: "spacer" }), actions),
      h("div", { class: "summary-body" }, facts,
        h("div", { class: "charts" }, cpu.element, memory.element,
          h("figure", { class: "spark small" },
            h("figcaption", {}, h("span", { class: "spark-label" }, "Processes"), pids),
            h("figcaption", {}, h("span", { class: "spark-label" }, "Disk I/O"), io), oom)))),
    termBox,
    h("section", { class: "card" }, tablist, panel));

  const tabButtons = TABS.map((t, i) => {
    const button = h("button", {
      type: "button", role: "tab", id: `tab-${t.key}`, "aria-controls": "tab-panel",
      "aria-selected": "false", tabindex: i === 0 ? "0" : "-1", "aria-keyshortcuts": t.shortcut,
      onclick: () => selectTab(t.key, true),
      onkeydown: (e) => {
        const step = e.key === "ArrowRight" ? 1 : e.key === "ArrowLeft" ? -1 : 0;
        if (!step) return;
        e.preventDefault();
        selectTab(TABS[(i + step + TABS.length) % TABS.length].key, true);
      },
    }, t.label);
    tablist.append(button);
    return button;
  });
  panel.id = "tab-panel";

  function selectTab(key, focus = false) {
    if (tab?.key === key) {
      if (focus) tabButtons[TABS.findIndex((t) => t.key === key)].focus();
      return;
    }
    tab?.view?.dispose();
    const index = TABS.findIndex((t) => t.key === key);
    tabButtons.forEach((b, i) => {
      b.setAttribute("aria-selected", String(i === index));
      b.tabIndex = i === index ? 0 : -1;
    });
    panel.setAttribute("aria-labelledby", tabButtons[index].id);
    const view = TABS[index].mount(panel, id, sandbox?.network);
    tab = { key, view };
    if (focus) tabButtons[index].focus();
  }

  async function refresh() {
    if (gone) return;
    let next;
    try {
      next = await api(`/v1/sandboxes/${seg(id)}`);
    } catch (e) {
      if (e.status === 404) {
        gone = true;
        terminal?.dispose();
        terminal = null;
        replace(main, h("section", { class: "card" }, h("h1", {}, "Sandbox not found"),
          h("p", {}, e.message), h("p", {}, h("a", { href: "#/" }, "Back to the sandboxes"))));
        main.focus();
      } else {
        notify(e.message, "error");
      }
      return;
    }
    const first = sandbox === null;
    const stateChanged = sandbox?.state !== next.state;
    sandbox = next;
    if (first) {
      onName(sandbox.name);
      title.textContent = sandbox.name;
      document.title = `${sandbox.name} · Nexus`;
      selectTab("files");
    }
    if (stateChanged) showState(first);
    showFacts();
    if (sandbox.state === "running") await sample();
  }

  function showState(first) {
    replace(badge, stateBadge(sandbox.state),
      sandbox.crash_reason ? h("span", { class: "hint" }, ` ${sandbox.crash_reason}`) : null);
    const hadFocus = actions.contains(document.activeElement);
    replace(actions, actionButtons());
    if (hadFocus) actions.querySelector("button")?.focus(); // the pressed button is gone
    const running = sandbox.state === "running";
    if (running && !terminal) {
      terminal = mountTerminal(termBox, id, { onLeave: () => termBox.querySelector(".term-bar button")?.focus() });
    } else if (!running && sandbox.state !== "paused" && terminal) {
      terminal.dispose();
      terminal = null;
    }
    if (!terminal) {
      replace(termBox, h("p", { class: "empty" },
        sandbox.state === "paused" ? "The sandbox is paused." : `The sandbox is ${sandbox.state}; start it to open a terminal.`));
    }
    if (!running) {
      previousSample = null;
      cpu.clear();
      memory.clear();
      pids.textContent = "–";
      io.textContent = "–";
      oom.textContent = "";
    }
    if (!first) tab?.view?.refresh?.();
  }

  function showFacts() {
    const limits = sandbox.limits ?? {};
    const limitText = [
      limits.cpus ? `${limits.cpus} CPU` : null,
      limits.memory_mib ? `${limits.memory_mib} MiB` : null,
      limits.pids ? `${limits.pids} processes` : null,
    ].filter(Boolean).join(", ") || "none";
    const fact = (k, v) => [h("dt", {}, k), h("dd", {}, v)];
    replace(facts,
      fact("Id", h("code", {}, sandbox.id)),
      fact("Image", sandbox.image),
      fact("Driver", sandbox.driver),
      fact("Age", h("span", { title: sandbox.created_at }, age(sandbox.created_at))),
      fact("Limits", limitText),
      fact("Network", (sandbox.network?.allow ?? []).length ? sandbox.network.allow.join(", ") : "nothing allowed"),
      sandbox.isolation?.warnings?.length ? fact("Warnings", sandbox.isolation.warnings.join("; ")) : null);
  }

  async function sample() {
    let s;
    try {
      s = await stats(id);
    } catch {
      return;
    }
    const c = cpuPercent(previousSample, s);
    previousSample = s;
    if (c !== null || cpu.values.length) cpu.push(c);
    const limit = s.memoryLimit ?? (sandbox.limits?.memory_mib ? sandbox.limits.memory_mib * 1048576 : null);
    memory.max = limit;
    memory.push(s.memory, [s.memoryPeak !== null ? `peak ${bytes(s.memoryPeak)}` : null,
      limit ? `of ${bytes(limit)}` : null].filter(Boolean).join(" · "));
    pids.textContent = s.pids === null ? "–" : s.pidsLimit ? `${s.pids} of ${s.pidsLimit}` : String(s.pids);
    io.textContent = s.ioRead === null && s.ioWrite === null
      ? "–" : `read ${bytes(s.ioRead)} · written ${bytes(s.ioWrite)}`;
    io.title = "Block I/O since the sandbox started";
    oom.textContent = s.oomKills ? `${s.oomKills} process${s.oomKills === 1 ? "" : "es"} killed for memory` : "";
  }

  function actionButtons() {
    const list = [];
    const state = sandbox.state;
    const post = (verb, done) => async () => {
      await api(`/v1/sandboxes/${seg(id)}/${verb}`, { method: "POST" });
      return done;
    };
    if (state === "running") {
      list.push(button("Pause", post("pause", "Paused.")));
      list.push(button("Stop", post("stop", "Stopped.")));
    } else if (state === "paused") {
      list.push(button("Resume", post("resume", "Resumed.")));
      list.push(button("Stop", post("stop", "Stopped.")));
    } else if (["created", "stopped", "crashed"].includes(state)) {
      list.push(button("Start", post("start", "Started.")));
    }
    list.push(button("Delete", async () => {
      const ok = await confirmDialog(`Delete ${sandbox.name}?`,
        "Its processes end and its files are deleted with it (a named workspace is kept). This cannot be undone.");
      if (!ok) return null;
      const force = ["running", "paused", "starting"].includes(state) ? "?force=true" : "";
      await api(`/v1/sandboxes/${seg(id)}${force}`, { method: "DELETE" });
      gone = true;
      location.hash = "#/";
      return `Deleted ${sandbox.name}.`;
    }, "danger"));
    return list;
  }

  function button(label, run, kind = "") {
    const b = h("button", { type: "button", class: kind }, label);
    b.addEventListener("click", async () => {
      b.disabled = true;
      try {
        const message = await run();
        if (message) notify(message);
        if (!gone) await refresh();
      } catch (e) {
        notify(`${label}: ${e.message}`, "error");
      } finally {
        b.disabled = false;
      }
    });
    return b;
  }

  const stop = every(POLL_MS, refresh);
  return {
    dispose() {
      stop();
      terminal?.dispose();
      tab?.view?.dispose();
      document.title = "Nexus";
    },
    onKey(event) {
      if (event.key === "t" && terminal) {
        event.preventDefault();
        terminal.focus();
        return;
      }
      const t = TABS.find((x) => x.shortcut === event.key);
      if (t) {
        event.preventDefault();
        selectTab(t.key, true);
      }
    },
  };
}
