// End-to-end test of the web console in headless Chromium, driven by playwright-core,
// against a real nexusd (scripts/console-test.sh starts one and sets the environment):
// log in (a wrong token is refused), create a sandbox, type `echo hello` in its terminal
// and see `hello` (and again after a reload, re-attached to the same session), upload a
// file and see it listed, delete the sandbox. Screenshots go to
// $SCREENSHOTS. The steps run in order and share one page; a failed step skips the rest.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const URL_ = required("NEXUS_URL");
const TOKEN = required("NEXUS_TOKEN");
const SCREENSHOTS = process.env.SCREENSHOTS ?? "target/console-test";
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const NAME = `console-e2e-${Date.now().toString(36)}`;
const UPLOAD = "console-upload.txt";
const UPLOAD_TEXT = "uploaded through the web console\n";

let browser;
let page;
let failed = false;
const problems = []; // page errors and CSP violations: any of them fails the run

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set; run scripts/console-test.sh`);
  return value;
}

/** A test step that is skipped once an earlier one failed (they build on each other). */
function step(name, fn) {
  test(name, { timeout: 60_000 }, async (t) => {
    if (failed) {
      t.skip("an earlier step failed");
      return;
    }
    try {
      await fn();
    } catch (e) {
      failed = true;
      await shot(`failed-${name.replace(/\W+/g, "-")}`).catch(() => {});
      throw e;
    }
  });
}

async function shot(name) {
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: true });
}

/** The API, outside the browser, to check what the console did. */
async function api(path, method = "GET") {
  const response = await fetch(`${URL_}${path}`, { method, headers: { Authorization: `Bearer ${TOKEN}` } });
  return { status: response.status, body: await response.text() };
}

before(async () => {
  mkdirSync(SCREENSHOTS, { recursive: true });
  const args = ["--disable-dev-shm-usage"];
  // Chromium refuses to run as root with its own sandbox (CI runs as root).
  if (process.getuid?.() === 0) args.push("--no-sandbox");
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args });
  const context = await browser.newContext({ viewport: { width: 1366, height: 900 } });
  page = await context.newPage();
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (message) => {
    const text = message.text();
    if (message.type() === "error" && /Content Security Policy|Refused to/i.test(text)) problems.push(`CSP: ${text}`);
  });
});

after(async () => {
  await browser?.close();
});

step("the console loads without a token and asks for one", async () => {
  const response = await page.goto(`${URL_}/`);
  assert.equal(response.status(), 200);
  assert.match(response.headers()["content-security-policy"] ?? "", /script-src 'self'/);
  await page.locator("#token").waitFor();
  assert.equal(await page.title(), "Nexus");
});

step("a wrong token is refused with a clear message", async () => {
  await page.locator("#token").fill("not-the-daemon-token-0123456789");
  await page.keyboard.press("Enter");
  const error = page.locator("#login-error");
  await error.waitFor({ state: "visible" });
  assert.match(await error.innerText(), /refused this token/);
  assert.equal(await page.evaluate(() => sessionStorage.length), 0, "a refused token is not kept");
  await shot("01-login-refused");
});

step("the daemon's token logs in and shows the sandbox list", async () => {
  await page.locator("#token").fill(TOKEN);
  await page.keyboard.press("Enter");
  await page.locator("table.sandboxes").waitFor();
  await page.locator("#new-name").waitFor();
  await shot("02-sandboxes");
});

step("a sandbox is created from the form and shown running", async () => {
  await page.locator("#new-name").fill(NAME);
  await page.locator("#new-memory").fill("256");
  await page.keyboard.press("Enter"); // the form submits on Enter
  const row = page.locator("table.sandboxes tbody tr", { has: page.getByRole("link", { name: NAME, exact: true }) });
  await row.locator(".state-running").waitFor({ timeout: 30_000 });
  const { status, body } = await api(`/v1/sandboxes/${NAME}`);
  assert.equal(status, 200, body);
  assert.equal(JSON.parse(body).limits.memory_mib, 256);
  // CPU and memory come from the stats poll.
  await page.waitForFunction((name) => {
    const link = [...document.querySelectorAll("table.sandboxes a.name")].find((a) => a.textContent === name);
    const cells = link?.closest("tr")?.querySelectorAll("td.num");
    return cells && cells[2]?.textContent.trim() !== "–";
  }, NAME, { timeout: 15_000 });
  await shot("03-created");
});

step("typing `echo hello` in the terminal shows hello", async () => {
  await page.getByRole("link", { name: NAME, exact: true }).click();
  await page.locator(".term-status.ok").waitFor({ timeout: 30_000 });
  await page.locator(".term-screen").click();
  // Wait for the shell's prompt before typing.
  await page.waitForFunction(() => document.querySelector(".xterm-rows")?.textContent.trim().length > 0);
  await page.keyboard.type("echo hello", { delay: 20 });
  await page.keyboard.press("Enter");
  // The output line itself: exactly "hello", not the command line that contains it.
  await page.waitForFunction(() =>
    [...document.querySelectorAll(".xterm-rows > div")].some((row) => row.textContent.trim() === "hello"),
  null, { timeout: 15_000 });
  await shot("04-terminal");
});

step("a reloaded page re-attaches to the same terminal session and replays it", async () => {
  const before = await page.locator(".term-status.ok").innerText();
  await page.reload();
  assert.match(before, /session \w+/);
  await page.locator(".term-status.ok", { hasText: before }).waitFor({ timeout: 30_000 });
  await page.waitForFunction(() =>
    [...document.querySelectorAll(".xterm-rows > div")].some((row) => row.textContent.trim() === "hello"),
  null, { timeout: 15_000 });
});

step("an uploaded file is listed in the file browser", async () => {
  await page.getByRole("tab", { name: "Files" }).click();
  await page.locator("#upload-input").setInputFiles({
    name: UPLOAD, mimeType: "text/plain", buffer: Buffer.from(UPLOAD_TEXT),
  });
  await page.locator(`tr[data-path="/workspace/${UPLOAD}"]`).waitFor({ timeout: 15_000 });
  const { status, body } = await api(`/v1/sandboxes/${NAME}/files/content?path=/workspace/${UPLOAD}`);
  assert.equal(status, 200);
  assert.equal(body, UPLOAD_TEXT);
  await shot("05-files");
});

step("the sandbox is deleted after confirmation", async () => {
  await page.locator(".summary .actions button.danger").click();
  const dialog = page.locator("dialog#confirm[open]");
  await dialog.waitFor();
  await shot("06-confirm-delete");
  await dialog.getByRole("button", { name: "Delete" }).click();
  await page.waitForURL((url) => url.hash === "#/");
  await page.locator("table.sandboxes").waitFor();
  await page.getByRole("link", { name: NAME, exact: true }).waitFor({ state: "detached", timeout: 30_000 });
  const { status } = await api(`/v1/sandboxes/${NAME}`);
  assert.equal(status, 404, "the sandbox is gone from the API");
  await shot("07-deleted");
});

step("no page error and no Content-Security-Policy violation happened", async () => {
  assert.deepEqual(problems, []);
});
