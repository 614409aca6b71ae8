// The console's entry point: the login gate, a hash router (#/ and #/sandboxes/{id}) and
// the keyboard shortcuts every page shares.

import { api, setToken, token, whenUnauthorized } from "./api.js";
import { h, notify, clearNotice, replace, typing } from "./ui.js";
import { mountList } from "./list.js";
import { mountSandbox } from "./sandbox.js";

const main = document.getElementById("main");
const crumbs = document.getElementById("crumbs");
const logout = document.getElementById("logout");
const helpButton = document.getElementById("help-button");
const help = document.getElementById("help");

/** The page on screen: { dispose(), onKey?(event) }. */
let page = null;
let refusedMessage = null;

whenUnauthorized(() => {
  setToken(null);
  refusedMessage = "The daemon no longer accepts this token. Log in again.";
  route();
});

logout.addEventListener("click", () => {
  setToken(null);
  refusedMessage = null;
  location.hash = "#/";
  route();
});
helpButton.addEventListener("click", () => help.showModal());
window.addEventListener("hashchange", route);

let pendingG = false;
document.addEventListener("keydown", (event) => {
  if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
  if (typing(event) || document.querySelector("dialog[open]")) return;
  if (!token()) return;
  if (pendingG) {
    pendingG = false;
    if (event.key === "s") {
      event.preventDefault();
      location.hash = "#/";
      return;
    }
  }
  if (event.key === "g") {
    pendingG = true;
    setTimeout(() => (pendingG = false), 1000);
    return;
  }
  if (event.key === "?") {
    event.preventDefault();
    help.showModal();
    return;
  }
  page?.onKey?.(event);
});

function route() {
  page?.dispose();
  page = null;
  if (!token()) {
    clearNotice();
    showLogin();
    return;
  }
  logout.hidden = false;
  helpButton.hidden = false;
  const match = location.hash.match(/^#\/sandboxes\/([^/]+)$/);
  if (match) {
    const id = decodeURIComponent(match[1]);
    setCrumbs(id);
    page = mountSandbox(main, id, (name) => setCrumbs(name));
  } else {
    setCrumbs(null);
    page = mountList(main);
  }
  main.focus({ preventScroll: true });
}

function setCrumbs(name) {
  replace(crumbs,
    name === null
      ? h("span", { "aria-current": "page" }, "Sandboxes")
      : [h("a", { href: "#/" }, "Sandboxes"), h("span", { class: "sep", "aria-hidden": "true" }, "/"),
        h("span", { "aria-current": "page" }, name)]);
}

function showLogin() {
  logout.hidden = true;
  helpButton.hidden = true;
  replace(crumbs);
  const input = h("input", {
    id: "token", name: "token", type: "password", autocomplete: "off", spellcheck: "false",
    required: true, "aria-describedby": "token-help",
  });
  const error = h("p", { id: "login-error", class: "error", role: "alert", hidden: true });
  const submit = h("button", { type: "submit", class: "primary" }, "Log in");
  const form = h("form", { class: "login card", onsubmit: login },
    h("h1", {}, "Nexus console"),
    h("label", { for: "token" }, "API token"),
    input,
    h("p", { id: "token-help", class: "hint" },
      "The daemon's bearer token: ", h("code", {}, "nexusctl status"), " names its file (",
      h("code", {}, "cat ~/.config/nexus/token"), " of the user running nexusd), unless nexusd was given ",
      h("code", {}, "NEXUS_TOKEN"), ". It is kept in this tab only."),
    error,
    h("div", { class: "actions" }, submit));
  replace(main, form);
  if (refusedMessage) {
    error.textContent = refusedMessage;
    error.hidden = false;
  }
  input.focus();

  async function login(event) {
    event.preventDefault();
    const candidate = input.value.trim();
    if (!candidate) return;
    submit.disabled = true;
    error.hidden = true;
    try {
      await api("/v1/status", { token: candidate });
      setToken(candidate);
      refusedMessage = null;
      route();
      notify("Logged in.");
    } catch (e) {
      error.textContent = e.status === 401
        ? "The daemon refused this token. Copy it again from the token file of the daemon you are looking at."
        : e.message;
      error.hidden = false;
      input.select();
    } finally {
      submit.disabled = false;
    }
  }
}

route();
