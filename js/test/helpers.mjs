// Shared helpers of the end-to-end tests: a reference server process per test, headless
// Chromium from Debian (playwright-core, no browser download), small waits.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const serverBin = process.env.TIDINGS_SERVER ?? join(root, "target/debug/server-reference");

export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-dev-shm-usage",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];

export function tempDir(prefix = "tidings-e2e-") {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** Starts `server-reference` on 127.0.0.1 (port 0 unless given); resolves once it listens. */
export async function startServer({ port = 0, dataDir, demoDir = join(root, "js/demo"), extra = [] } = {}) {
  const args = ["--bind", `127.0.0.1:${port}`, "--dev-tokens", "--demo-dir", demoDir];
  if (dataDir) args.push("--data-dir", dataDir);
  args.push(...extra);
  const proc = spawn(serverBin, args, {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn" },
  });
  let stderr = "";
  proc.stderr.on("data", (d) => {
    stderr += d;
    if (process.env.TIDINGS_E2E_VERBOSE) process.stderr.write(d);
  });
  const lines = createInterface({ input: proc.stdout });
  const first = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("server did not start: " + stderr)), 15000);
    lines.once("line", (line) => {
      clearTimeout(timer);
      resolve(line);
    });
    proc.once("exit", (code) => reject(new Error(`server exited (${code}): ${stderr}`)));
  });
  lines.on("line", () => {}); // keep reading stdout
  const match = /listening on (http:\/\/[\d.]+:(\d+))/.exec(first);
  if (!match) throw new Error("unexpected first line: " + first);
  const base = match[1];
  const stop = (signal = "SIGTERM") =>
    new Promise((resolve) => {
      if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
      proc.once("exit", () => resolve());
      proc.kill(signal);
      setTimeout(() => proc.kill("SIGKILL"), 5000).unref();
    });
  return { base, port: Number(match[2]), proc, stop, kill: () => stop("SIGKILL") };
}

export async function connections(base) {
  const text = await (await fetch(base + "/metrics")).text();
  const line = text.split("\n").find((l) => l.startsWith("tidings_connections "));
  return line ? Number(line.split(" ")[1]) : NaN;
}

export async function devToken(base, user) {
  return (await (await fetch(`${base}/api/dev/token?user=${encodeURIComponent(user)}`)).json()).token;
}

/** Publishes through the server's HTTP API as the app back end. */
export async function serverPublish(base, channel, event, data) {
  const response = await fetch(base + "/api/publish", {
    method: "POST",
    headers: { "content-type": "application/json", authorization: "Bearer tidings-dev-api-key" },
    body: JSON.stringify({ channel, event, data }),
  });
  return { status: response.status, body: await response.text() };
}

export function launch() {
  return chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", args: CHROMIUM_ARGS });
}

export async function waitFor(check, { timeout = 15000, interval = 100, what = "condition" } = {}) {
  const end = Date.now() + timeout;
  let last;
  while (Date.now() < end) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, interval));
  }
  throw new Error(`timed out waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Status text of the demo's connection indicator. */
export const statusOf = (page) => page.locator("#status").textContent();

/** Texts of the posts shown by the demo, in order. */
export const postsOf = (page) => page.$$eval("#posts li .text", (els) => els.map((e) => e.textContent));

export async function post(page, text) {
  await page.fill("#text", text);
  await page.click("#composer button");
}

export async function openDemo(context, base, user) {
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`[page ${user}] error:`, e.message));
  page.on("console", (m) => {
    if (m.type() === "error" || process.env.TIDINGS_E2E_VERBOSE) console.error(`[page ${user}] ${m.text()}`);
  });
  await page.goto(`${base}/?user=${encodeURIComponent(user)}`);
  return page;
}

export function cleanup(dir) {
  rmSync(dir, { recursive: true, force: true });
}

/** Publishes a demo post through the HTTP API. */
export async function serverPost(base, text) {
  const r = await serverPublish(base, "discussion:general", "post.created", { author: "server", text, key: text });
  if (r.status !== 200) throw new Error("publish failed: " + r.status + " " + r.body);
}

/** How many times each text is shown on a page. */
export async function counts(page) {
  const out = {};
  for (const t of await postsOf(page)) out[t] = (out[t] ?? 0) + 1;
  return out;
}

export const isLeader = (page) => page.evaluate(() => globalThis.tidings?.isLeader === true);

/** A loopback TCP proxy the test can cut (open connections are destroyed, new ones refused). */
export async function startProxy(targetPort) {
  const { createServer, connect } = await import("node:net");
  const sockets = new Set();
  let cut = false;
  const server = createServer((client) => {
    if (cut) return client.destroy();
    const upstream = connect(targetPort, "127.0.0.1");
    sockets.add(client);
    sockets.add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = server.address().port;
  return {
    port,
    base: `http://127.0.0.1:${port}`,
    cut() {
      cut = true;
      for (const s of sockets) s.destroy();
      sockets.clear();
    },
    restore() {
      cut = false;
    },
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
