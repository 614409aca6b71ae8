// The sandbox list: every sandbox with its state, image, age, CPU and memory (polled),
// a form to create one, and stop, start and delete on each row.

import { api, seg, stats, cpuPercent } from "./api.js";
import { h, replace, age, bytes, percent, stateBadge, notify, confirmDialog, every } from "./ui.js";

const POLL_MS = 2000;
/** Stats are fetched for at most this many running sandboxes per poll. */
const STATS_LIMIT = 40;

export function mountList(main) {
  const rows = new Map(); // id -> { tr, cells, sandbox }
  const samples = new Map(); // id -> previous stats sample
  let sandboxes = [];

  const filter = h("input", {
    id: "filter", type: "search", placeholder: "Filter by name, state or image",
    "aria-label": "Filter sandboxes", "aria-keyshortcuts": "/", oninput: () => render(),
  });
  const tbody = h("tbody", {});
  const empty = h("p", { class: "empty", hidden: true }, "No sandboxes yet. Create one above.");
  const count = h("span", { class: "count" });
  const table = h("table", { class: "sandboxes" },
    h("caption", { class: "visually-hidden" }, "Sandboxes"),
    h("thead", {}, h("tr", {},
      ["Name", "State", "Image", "Age", "CPU", "Memory"].map((c) => h("th", { scope: "col" }, c)),
      h("th", { scope: "col", class: "actions-col" }, h("span", { class: "visually-hidden" }, "Actions")))),
    tbody);

  const form = createForm(async (request) => {
    const created = await api("/v1/sandboxes", { method: "POST", json: request });
    notify(`Sandbox ${created.name} created (${created.state}).`);
    await refresh();
    rows.get(created.id)?.cells.link.focus();
  });

  replace(main,
    h("section", { class: "card" }, h("h1", {}, "New sandbox"), form.element),
    h("section", { class: "card" },
      h("div", { class: "section-head" }, h("h1", {}, "Sandboxes ", count), filter),
      table, empty));

  async function refresh() {
    try {
      const list = await api("/v1/sandboxes");
      sandboxes = list.sandboxes;
    } catch (e) {
      notify(`Cannot list sandboxes: ${e.message}`, "error");
      return;
    }
    render();
    const running = sandboxes.filter((s) => s.state === "running").slice(0, STATS_LIMIT);
    await Promise.all(running.map(async (s) => {
      try {
        const sample = await stats(s.id);
        const cpu = cpuPercent(samples.get(s.id), sample);
        samples.set(s.id, sample);
        const row = rows.get(s.id);
        if (row) {
          row.cells.cpu.textContent = percent(cpu);
          row.cells.memory.textContent = bytes(sample.memory);
          row.cells.memory.title = sample.memoryPeak === null ? "" : `peak ${bytes(sample.memoryPeak)}`;
        }
      } catch {
        // The sandbox may have stopped between the list and this call; the next poll says.
      }
    }));
  }

  function render() {
    const term = filter.value.trim().toLowerCase();
    const shown = sandboxes.filter((s) =>
      !term || [s.name, s.id, s.state, s.image].some((v) => v?.toLowerCase().includes(term)));
    const now = Date.now();
    const ids = new Set(shown.map((s) => s.id));
    for (const [id, row] of rows) {
      if (!ids.has(id)) {
        row.tr.remove();
        rows.delete(id);
        if (!sandboxes.some((s) => s.id === id)) samples.delete(id);
      }
    }
    shown.forEach((sandbox, i) => {
      let row = rows.get(sandbox.id);
      if (!row) {
        row = makeRow(sandbox);
        rows.set(sandbox.id, row);
      }
      updateRow(row, sandbox, now);
      // The API's order (oldest first). A row already in place is not moved: moving a node
      // would take the keyboard focus away from a button in it.
      if (tbody.children[i] !== row.tr) tbody.insertBefore(row.tr, tbody.children[i] ?? null);
    });
    count.textContent = `(${sandboxes.length})`;
    empty.hidden = sandboxes.length !== 0;
    if (sandboxes.length !== 0 && shown.length === 0) {
      empty.hidden = false;
      empty.textContent = "No sandbox matches the filter.";
    } else {
      empty.textContent = "No sandboxes yet. Create one above.";
    }
  }

  function makeRow(sandbox) {
    const link = h("a", { href: `#/sandboxes/${seg(sandbox.id)}`, class: "name" }, sandbox.name);
    const cells = {
      link,
      state: h("td", {}),
      image: h("td", {}),
      age: h("td", { class: "num" }),
      cpu: h("td", { class: "num" }, "–"),
      memory: h("td", { class: "num" }, "–"),
      actions: h("td", { class: "row-actions" }),
    };
    const tr = h("tr", { dataset: { id: sandbox.id } },
      h("th", { scope: "row" }, link), cells.state, cells.image, cells.age, cells.cpu, cells.memory,
      cells.actions);
    return { tr, cells, state: null };
  }

  function updateRow(row, sandbox, now) {
    row.sandbox = sandbox;
    const { cells } = row;
    cells.link.textContent = sandbox.name;
    cells.link.title = sandbox.id;
    cells.image.textContent = sandbox.image;
    cells.age.textContent = age(sandbox.created_at, now);
    cells.age.title = sandbox.created_at;
    if (row.state !== sandbox.state) {
      row.state = sandbox.state;
      replace(cells.state, stateBadge(sandbox.state),
        sandbox.crash_reason ? h("span", { class: "hint" }, ` ${sandbox.crash_reason}`) : null);
      if (sandbox.state !== "running") {
        cells.cpu.textContent = "–";
        cells.memory.textContent = "–";
      }
      // Rebuilt only on a state change, so a focused button keeps its focus while polling.
      const hadFocus = cells.actions.contains(document.activeElement);
      replace(cells.actions, actionsFor(sandbox));
      if (hadFocus) cells.actions.querySelector("button")?.focus(); // the pressed button is gone
    }
  }

  function actionsFor(sandbox) {
    const buttons = [];
    const running = ["running", "paused", "starting"].includes(sandbox.state);
    if (running) {
      buttons.push(action("Stop", `Stop ${sandbox.name}`, () =>
        api(`/v1/sandboxes/${seg(sandbox.id)}/stop`, { method: "POST" }).then(() => `Stopped ${sandbox.name}.`)));
    } else if (["created", "stopped", "crashed"].includes(sandbox.state)) {
      buttons.push(action("Start", `Start ${sandbox.name}`, () =>
        api(`/v1/sandboxes/${seg(sandbox.id)}/start`, { method: "POST" }).then(() => `Started ${sandbox.name}.`)));
    }
    buttons.push(action("Delete", `Delete ${sandbox.name}`, async () => {
      const ok = await confirmDialog(`Delete ${sandbox.name}?`,
        "Its processes end and its files are deleted with it (a named workspace is kept). This cannot be undone.");
      if (!ok) return null;
      await api(`/v1/sandboxes/${seg(sandbox.id)}${running ? "?force=true" : ""}`, { method: "DELETE" });
      return `Deleted ${sandbox.name}.`;
    }, "danger"));
    return buttons;
  }

  function action(label, aria, run, kind = "") {
    const button = h("button", { type: "button", class: kind, "aria-label": aria }, label);
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        const message = await run();
        if (message) notify(message);
        await refresh();
      } catch (e) {
        notify(`${aria}: ${e.message}`, "error");
      } finally {
        button.disabled = false;
      }
    });
    return button;
  }

  const stop = every(POLL_MS, refresh);
  form.loadImages();
  return {
    dispose: stop,
    onKey(event) {
      if (event.key === "/") {
        event.preventDefault();
        filter.focus();
      } else if (event.key === "n") {
        event.preventDefault();
        form.focus();
      }
    },
  };
}

/** The create form: name, image and optional limits; Enter in any field submits. */
function createForm(create) {
  const name = h("input", {
    id: "new-name", name: "name", autocomplete: "off", spellcheck: "false", placeholder: "generated when empty",
    pattern: "[a-z][a-z0-9\\-]{0,62}", title: "1-63 of a-z, 0-9 and -, starting with a letter",
    "aria-keyshortcuts": "n",
  });
  const image = h("select", { id: "new-image", name: "image" }, h("option", { value: "host" }, "host"));
  const memory = h("input", { id: "new-memory", name: "memory", type: "number", min: "16", step: "1", placeholder: "no limit", inputmode: "numeric" });
  const cpus = h("input", { id: "new-cpus", name: "cpus", type: "number", min: "0.01", step: "0.01", placeholder: "no limit", inputmode: "decimal" });
  const pids = h("input", { id: "new-pids", name: "pids", type: "number", min: "8", step: "1", placeholder: "no limit", inputmode: "numeric" });
  const submit = h("button", { type: "submit", class: "primary" }, "Create");
  const error = h("p", { class: "error", role: "alert", hidden: true });
  const field = (label, input, unit) => h("div", { class: "field" },
    h("label", { for: input.id }, label), unit ? h("span", { class: "with-unit" }, input, h("span", { class: "unit" }, unit)) : input);

  const element = h("form", { class: "create", onsubmit: onSubmit },
    h("div", { class: "fields" },
      field("Name", name), field("Image", image), field("Memory", memory, "MiB"),
      field("CPUs", cpus, "cores"), field("Processes", pids, "max"),
      h("div", { class: "field submit" }, submit)),
    error);

  async function onSubmit(event) {
    event.preventDefault();
    error.hidden = true;
    const request = { image: image.value };
    if (name.value.trim()) request.name = name.value.trim();
    const limits = {};
    if (memory.value) limits.memory_mib = Number(memory.value);
    if (cpus.value) limits.cpus = Number(cpus.value);
    if (pids.value) limits.pids = Number(pids.value);
    if (Object.keys(limits).length) request.limits = limits;
    submit.disabled = true;
    submit.textContent = "Creating…";
    try {
      await create(request);
      element.reset();
    } catch (e) {
      error.textContent = e.message;
      error.hidden = false;
      name.focus();
    } finally {
      submit.disabled = false;
      submit.textContent = "Create";
    }
  }

  return {
    element,
    focus: () => name.focus(),
    async loadImages() {
      try {
        const list = await api("/v1/images");
        const names = (list.images ?? []).map((i) => i.name);
        if (!names.includes("host")) names.unshift("host");
        replace(image, names.map((n) => h("option", { value: n }, n)));
      } catch {
        // Keep the built-in `host`; creating still works.
      }
    },
  };
}
