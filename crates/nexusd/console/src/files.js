// The file browser of a sandbox's /workspace: list, navigate, download (a directory as a
// tar archive), upload (button or drag and drop).

import { api, seg, query } from "./api.js";
import { h, replace, bytes, time, notify } from "./ui.js";

const ROOT = "/workspace";

export function mountFiles(container, sandboxId) {
  let dir = ROOT;
  const crumbs = h("nav", { class: "path", "aria-label": "Directory" });
  const upButton = h("button", { type: "button", onclick: () => open(parent(dir)), "aria-label": "Parent directory" }, "↑ Up");
  const picker = h("input", { type: "file", multiple: true, id: "upload-input", class: "visually-hidden", onchange: () => upload(picker.files) });
  const uploadLabel = h("label", { for: "upload-input", class: "button", tabindex: "0", role: "button",
    onkeydown: (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); picker.click(); } } }, "Upload files");
  const refreshButton = h("button", { type: "button", onclick: () => load() }, "Refresh");
  const tbody = h("tbody", {});
  const message = h("p", { class: "empty", hidden: true });
  const progress = h("p", { class: "hint", role: "status" });
  const table = h("table", { class: "files" },
    h("thead", {}, h("tr", {},
      h("th", { scope: "col" }, "Name"), h("th", { scope: "col", class: "num" }, "Size"),
      h("th", { scope: "col" }, "Modified"), h("th", { scope: "col" }, "Mode"),
      h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")))),
    tbody);
  const panel = h("div", { class: "files-panel" },
    h("div", { class: "toolbar" }, upButton, crumbs, h("span", { class: "spacer" }), refreshButton, uploadLabel, picker),
    table, message, progress);
  replace(container, panel);

  // Drag and drop onto the panel uploads into the current directory.
  panel.addEventListener("dragover", (e) => {
    e.preventDefault();
    panel.classList.add("dropping");
  });
  panel.addEventListener("dragleave", () => panel.classList.remove("dropping"));
  panel.addEventListener("drop", (e) => {
    e.preventDefault();
    panel.classList.remove("dropping");
    if (e.dataTransfer?.files?.length) upload(e.dataTransfer.files);
  });

  async function load() {
    let list;
    try {
      list = await api(`/v1/sandboxes/${seg(sandboxId)}/files/list${query({ path: dir, depth: 1 })}`);
    } catch (e) {
      replace(tbody);
      message.textContent = e.message;
      message.hidden = false;
      return;
    }
    renderPath();
    const entries = [...list.entries].sort((a, b) =>
      (a.type === "dir" ? 0 : 1) - (b.type === "dir" ? 0 : 1) || a.path.localeCompare(b.path));
    replace(tbody, entries.map(row));
    message.hidden = entries.length !== 0 && !list.truncated;
    message.textContent = list.truncated ? "Only the first entries are shown." : "This directory is empty.";
  }

  function row(entry) {
    const name = basename(entry.path);
    const isDir = entry.type === "dir";
    const label = isDir ? `${name}/` : entry.type === "symlink" ? `${name} → ${entry.symlink_target ?? "?"}` : name;
    const nameCell = isDir
      ? h("button", { type: "button", class: "link entry dir", onclick: () => open(entry.path) }, label)
      : h("span", { class: "entry" }, label);
    const download = entry.type === "file" || isDir
      ? h("button", { type: "button", class: "link", "aria-label": `Download ${name}`, onclick: () => downloadEntry(entry) },
        isDir ? "Download .tar" : "Download")
      : null;
    return h("tr", { dataset: { path: entry.path } },
      h("td", {}, nameCell),
      h("td", { class: "num" }, isDir ? "" : bytes(entry.size)),
      h("td", { title: entry.modified_at }, time(entry.modified_at)),
      h("td", { class: "mono" }, entry.mode),
      h("td", { class: "row-actions" }, download));
  }

  function renderPath() {
    const parts = dir.split("/").filter(Boolean);
    const links = [h("span", { "aria-hidden": "true" }, "/")];
    let path = "";
    parts.forEach((part, i) => {
      path += `/${part}`;
      const target = path;
      if (i > 0) links.push(h("span", { class: "sep", "aria-hidden": "true" }, "/"));
      links.push(i === parts.length - 1
        ? h("span", { "aria-current": "location" }, part)
        : h("button", { type: "button", class: "link", onclick: () => open(target) }, part));
    });
    replace(crumbs, links);
    upButton.disabled = dir === ROOT;
  }

  function open(path) {
    dir = path;
    load();
  }

  async function downloadEntry(entry) {
    const isDir = entry.type === "dir";
    const endpoint = isDir ? "files/archive" : "files/content";
    try {
      const response = await api(`/v1/sandboxes/${seg(sandboxId)}/${endpoint}${query({ path: entry.path })}`, { raw: true });
      const blob = await response.blob();
      const url = URL.createObjectURL(blob);
      const a = h("a", { href: url, download: basename(entry.path) + (isDir ? ".tar" : "") });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (e) {
      notify(`Cannot download ${entry.path}: ${e.message}`, "error");
    }
  }

  async function upload(files) {
    const list = [...files];
    let done = 0;
    for (const file of list) {
      const path = `${dir}/${file.name}`;
      progress.textContent = `Uploading ${file.name} (${bytes(file.size)})…`;
      try {
        await api(`/v1/sandboxes/${seg(sandboxId)}/files/content${query({ path })}`, {
          method: "PUT", body: file, headers: { "Content-Type": "application/octet-stream" },
        });
        done++;
      } catch (e) {
        notify(`Cannot upload ${file.name}: ${e.message}`, "error");
      }
    }
    progress.textContent = "";
    picker.value = "";
    if (done) notify(`Uploaded ${done} file${done === 1 ? "" : "s"} to ${dir}.`);
    await load();
  }

  load();
  return { refresh: load, dispose() {} };
}

function basename(path) {
  return path.split("/").filter(Boolean).pop() ?? path;
}

function parent(path) {
  const cut = path.replace(/\/+$/, "").lastIndexOf("/");
  const up = cut <= 0 ? "/" : path.slice(0, cut);
  return up.length < ROOT.length ? ROOT : up;
}
