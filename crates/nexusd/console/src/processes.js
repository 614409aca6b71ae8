// A sandbox's background processes: the list (polled), each one's output streamed live,
// a form to start one (`sh -c`), and a button to stop one.

import { api, seg, query, readLines, fromBase64 } from "./api.js";
import { h, replace, time, notify, every } from "./ui.js";

const POLL_MS = 2000;

export function mountProcesses(container, sandboxId) {
  let selected = null;
  let stream = null; // AbortController of the output being followed

  const command = h("input", {
    id: "process-command", name: "command", autocomplete: "off", spellcheck: "false",
    placeholder: "e.g. python3 -m http.server 8000", "aria-label": "Command to run in the background",
  });
  const form = h("form", { class: "toolbar", onsubmit: start },
    command, h("button", { type: "submit" }, "Run in background"));
  const tbody = h("tbody", {});
  const message = h("p", { class: "empty" }, "No background processes.");
  const outputTitle = h("h3", {}, "Output");
  const output = h("pre", { class: "output", tabindex: "0", "aria-live": "off", "aria-label": "Process output" });
  const outputBox = h("div", { class: "output-box", hidden: true }, outputTitle, output);
  replace(container,
    h("div", { class: "processes-panel" }, form,
      h("table", { class: "processes" },
        h("thead", {}, h("tr", {},
          ["Id", "Pid", "State", "Command", "Started", "Exit"].map((c) => h("th", { scope: "col" }, c)),
          h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")))),
        tbody),
      message, outputBox));

  async function refresh() {
    let list;
    try {
      list = await api(`/v1/sandboxes/${seg(sandboxId)}/processes`);
    } catch (e) {
      replace(tbody);
      message.textContent = e.message;
      message.hidden = false;
      return;
    }
    const processes = list.processes;
    message.hidden = processes.length !== 0;
    message.textContent = "No background processes.";
    const focused = document.activeElement?.dataset?.action;
    const focusedId = document.activeElement?.closest?.("tr")?.dataset?.id;
    replace(tbody, processes.map(row));
    if (focused && focusedId) tbody.querySelector(`tr[data-id="${focusedId}"] [data-action="${focused}"]`)?.focus();
  }

  function row(p) {
    const exit = p.exit
      ? [p.exit.exit_code !== null && p.exit.exit_code !== undefined ? `code ${p.exit.exit_code}` : null,
        p.exit.signal ? `signal ${p.exit.signal}` : null, p.exit.timed_out ? "timed out" : null,
        p.exit.oom_killed ? "OOM killed" : null, p.exit.output_truncated ? "output truncated" : null]
        .filter(Boolean).join(", ")
      : "";
    return h("tr", { dataset: { id: String(p.id) }, class: selected === p.id ? "selected" : null },
      h("td", { class: "num" }, p.id),
      h("td", { class: "num" }, p.pid),
      h("td", {}, h("span", { class: `state state-${p.state === "running" ? "running" : "stopped"}` }, p.state)),
      h("td", { class: "mono argv", title: p.argv.join(" ") }, p.argv.join(" ")),
      h("td", { title: p.started_at }, time(p.started_at)),
      h("td", {}, exit),
      h("td", { class: "row-actions" },
        h("button", { type: "button", dataset: { action: "output" }, onclick: () => follow(p) }, "Output"),
        p.state === "running"
          ? h("button", { type: "button", class: "danger", dataset: { action: "stop" }, onclick: () => signal(p, 15) }, "Stop")
          : null));
  }

  async function follow(p) {
    stream?.abort();
    selected = p.id;
    for (const tr of tbody.children) tr.classList.toggle("selected", tr.dataset.id === String(p.id));
    outputBox.hidden = false;
    outputTitle.textContent = `Output of ${p.id}: ${p.argv.join(" ")}`;
    output.replaceChildren();
    const controller = new AbortController();
    stream = controller;
    const decoders = { stdout: new TextDecoder(), stderr: new TextDecoder() };
    try {
      const response = await api(
        `/v1/sandboxes/${seg(sandboxId)}/processes/${p.id}/output${query({ stdout_offset: 0, stderr_offset: 0 })}`,
        { raw: true, signal: controller.signal });
      await readLines(response, (line) => {
        if (line.type === "stdout" || line.type === "stderr") {
          const text = decoders[line.type].decode(fromBase64(line.data), { stream: true });
          appendOutput(text, line.type);
        } else if (line.type === "skipped") {
          appendOutput(`[${line.bytes} older bytes of ${line.stream} are no longer kept]\n`, "note");
        } else if (line.type === "exit") {
          const how = line.exit_code !== null && line.exit_code !== undefined ? `exit code ${line.exit_code}` : `signal ${line.signal}`;
          appendOutput(`[ended: ${how}]\n`, "note");
        }
      });
    } catch (e) {
      if (e.name !== "AbortError") appendOutput(`[${e.message}]\n`, "note");
    }
  }

  function appendOutput(text, kind) {
    const atBottom = output.scrollTop + output.clientHeight >= output.scrollHeight - 4;
    output.append(kind === "stdout" ? text : h("span", { class: kind }, text));
    if (atBottom) output.scrollTop = output.scrollHeight;
  }

  async function signal(p, number) {
    try {
      await api(`/v1/sandboxes/${seg(sandboxId)}/processes/${p.id}/signal`, { method: "POST", json: { signal: number } });
      notify(`Sent SIGTERM to process ${p.id}.`);
    } catch (e) {
      notify(`Cannot stop process ${p.id}: ${e.message}`, "error");
    }
    refresh();
  }

  async function start(event) {
    event.preventDefault();
    const line = command.value.trim();
    if (!line) return;
    try {
      const p = await api(`/v1/sandboxes/${seg(sandboxId)}/processes`, { method: "POST", json: { argv: ["sh", "-c", line] } });
      command.value = "";
      await refresh();
      follow(p);
    } catch (e) {
      notify(`Cannot start "${line}": ${e.message}`, "error");
    }
  }

  const stop = every(POLL_MS, refresh);
  return {
    dispose() {
      stop();
      stream?.abort();
    },
  };
}
