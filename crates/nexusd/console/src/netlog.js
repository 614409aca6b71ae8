// A sandbox's network log: every connection attempt with its decision and the rule that
// made it, newest first, polled with `after` so only new entries travel.

import { api, seg, query } from "./api.js";
import { h, replace, bytes, time, every } from "./ui.js";

const POLL_MS = 2000;
/** Entries kept on screen. */
const KEEP = 500;

export function mountNetlog(container, sandboxId, policy) {
  let after = null;
  const tbody = h("tbody", {});
  const message = h("p", { class: "empty" }, "No connection attempts yet.");
  const allow = policy?.allow ?? [];
  const deny = policy?.deny ?? [];
  const rules = policy
    ? h("p", { class: "hint" }, "Policy: ",
      allow.length ? ["allows ", h("code", {}, allow.join(", "))] : "nothing allowed",
      deny.length ? ["; denies ", h("code", {}, deny.join(", ")), " (deny wins)"] : null,
      ". Everything else is refused and logged here.")
    : null;
  replace(container,
    h("div", { class: "netlog-panel" }, rules,
      h("table", { class: "netlog" },
        h("thead", {}, h("tr", {},
          ["Time", "Decision", "Target", "Rule", "Via", "Up", "Down", "Error"].map((c) => h("th", { scope: "col" }, c)))),
        tbody),
      message));

  async function refresh() {
    let page;
    try {
      page = await api(`/v1/sandboxes/${seg(sandboxId)}/network/log${query({ after, limit: KEEP })}`);
    } catch (e) {
      message.textContent = e.message;
      message.hidden = false;
      return;
    }
    for (const entry of page.entries) {
      after = entry.id;
      tbody.prepend(row(entry));
    }
    while (tbody.children.length > KEEP) tbody.lastChild.remove();
    message.hidden = tbody.children.length !== 0;
    message.textContent = "No connection attempts yet.";
  }

  const stop = every(POLL_MS, refresh);
  return { dispose: stop };
}

function row(e) {
  const target = `${e.host ?? e.address ?? "?"}:${e.port}`;
  return h("tr", { class: `decision-${e.decision}` },
    h("td", { title: e.time }, time(e.time)),
    h("td", {}, h("span", { class: `state ${e.decision === "allowed" ? "state-running" : "state-crashed"}` }, e.decision)),
    h("td", { class: "mono", title: e.address ?? "" }, target),
    h("td", { class: "mono" }, e.rule),
    h("td", {}, e.via),
    h("td", { class: "num" }, bytes(e.bytes_up)),
    h("td", { class: "num" }, bytes(e.bytes_down)),
    h("td", {}, e.error ?? ""));
}
