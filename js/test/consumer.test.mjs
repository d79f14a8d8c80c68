// The packed package works for an app: `npm pack` → install the tarball into a fresh
// consumer → bundle with esbuild → run in Chromium (page and Web Worker). Importing it in
// Node (server-side rendering) is safe, and the in-memory test double works there.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { cpSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { cleanup, launch, root, startServer, tempDir, waitFor } from "./helpers.mjs";

const js = join(root, "js");

function packAndInstall() {
  const dir = tempDir("tidings-consumer-");
  execFileSync("npm", ["pack", "--pack-destination", dir, "--silent"], { cwd: js, stdio: ["ignore", "pipe", "inherit"] });
  const tarball = readdirSync(dir).find((f) => f.endsWith(".tgz"));
  assert.ok(tarball, "npm pack wrote a tarball");
  writeFileSync(
    join(dir, "package.json"),
    JSON.stringify({ name: "consumer", private: true, type: "module", dependencies: { tidings: `file:./${tarball}` } }),
  );
  execFileSync("npm", ["install", "--no-audit", "--no-fund", "--silent"], { cwd: dir, stdio: "inherit" });
  return dir;
}

const APP = `
import { createClient, TidingsError } from "tidings";
export async function run(base, where) {
  const { token, url } = await (await fetch(base + "/api/dev/token?user=consumer-" + where)).json();
  const client = createClient({ url, token, shareConnection: false, storage: "memory" });
  await client.connect();
  const channel = client.channel("consumer:" + where);
  const got = new Promise((resolve) => channel.on("publication", resolve));
  await channel.subscribe();
  const ack = await channel.publish("check", { where });
  const publication = await got;
  let code;
  try { await client.publish("bad*", "x", {}); } catch (e) { code = e instanceof TidingsError && e.code; }
  client.close();
  return { offset: ack.offset, data: publication.data, code, state: client.state };
}
`;

test("npm pack → esbuild bundle → runs in a page and a Web Worker; SSR import is safe", { timeout: 120000 }, async () => {
  const dir = packAndInstall();
  const out = join(dir, "out");
  mkdirSync(join(dir, "src"), { recursive: true });
  writeFileSync(join(dir, "src/app.js"), APP);
  writeFileSync(
    join(dir, "src/page.js"),
    `import { run } from "./app.js";
     run(location.origin, "page").then((r) => (window.result = r), (e) => (window.result = { error: String(e) }));
     const worker = new Worker("./worker.js", { type: "module" });
     worker.onmessage = (e) => (window.workerResult = e.data);
     worker.onerror = (e) => (window.workerResult = { error: e.message });`,
  );
  writeFileSync(
    join(dir, "src/worker.js"),
    `import { run } from "./app.js";
     run(self.location.origin, "worker").then((r) => postMessage(r), (e) => postMessage({ error: String(e) }));`,
  );
  const esbuild = await import(pathToFileURL(join(js, "node_modules/esbuild/lib/main.js")).href);
  await esbuild.build({
    entryPoints: [join(dir, "src/page.js"), join(dir, "src/worker.js")],
    outdir: out,
    bundle: true,
    format: "esm",
    minify: true,
    absWorkingDir: dir,
    logLevel: "warning",
  });
  // esbuild keeps `new URL("tidings_wasm_bg.wasm", import.meta.url)`: the app ships the
  // .wasm next to its bundle (Vite and webpack 5 copy it by themselves).
  cpSync(join(dir, "node_modules/tidings/dist/tidings_wasm_bg.wasm"), join(out, "tidings_wasm_bg.wasm"));
  writeFileSync(join(out, "index.html"), '<!doctype html><meta charset="utf-8"><script type="module" src="page.js"></script>');

  // Server-side rendering: importing the package in Node touches no browser global.
  const ssr = execFileSync(
    process.execPath,
    ["--input-type=module", "-e", `
      const t = await import("tidings");
      const testing = await import("tidings/testing");
      const server = testing.createTestServer();
      const a = testing.createTestClient({ server, user: "a" }), b = testing.createTestClient({ server, user: "b" });
      const got = new Promise((r) => b.channel("room").on("publication", r));
      await b.channel("room").subscribe();
      const ack = await a.channel("room").publish("hi", { n: 1 });
      const p = await got;
      console.log(JSON.stringify({ exports: Object.keys(t).sort(), offset: ack.offset, data: p.data, user: p.publisher.user }));`],
    { cwd: dir, encoding: "utf8" },
  );
  const node = JSON.parse(ssr.trim().split("\n").pop());
  assert.ok(node.exports.includes("createClient") && node.exports.includes("TidingsError"));
  assert.deepEqual([node.offset, node.data, node.user], [1, { n: 1 }, "a"]);

  // The published types: a TypeScript consumer type-checks against the packed .d.ts files.
  writeFileSync(
    join(dir, "src/typed.ts"),
    `import { createClient, TidingsError, type Ack, type Publication, type StateChange, type TidingsEvent,
       type PendingMessage, type MessageUpdate, type Stats, type Unsubscribe } from "tidings";
     import { createTestClient, type TestClient } from "tidings/testing";
     interface Post { text: string }
     export async function typed(): Promise<number> {
       const client = createClient({ url: "wss://example.test/ws", getToken: async () => "jwt", autoConnect: false });
       const off: Unsubscribe = client.on("state", (s: StateChange) => void [s.state, s.previous, s.retryInMs]);
       client.on("error", (e: TidingsError) => void e.code);
       client.on("message", (m: MessageUpdate) => void (m.status.status === "acked" && m.status.offset));
       client.on("batch", (events: TidingsEvent[]) => void events.map((e) => e.type));
       const channel = client.channel("room");
       channel.on("publication", (p: Publication) => void (p.data as Post).text);
       for await (const batch of channel) { void batch[0]?.offset; break; }
       const ack: Ack = await channel.publish<Post>("post.created", { text: "hi" });
       const outbox: PendingMessage[] = await client.outbox();
       const stats: Stats = await client.stats();
       const test: TestClient = createTestClient({ user: "t" });
       test.setOnline(false);
       off();
       return ack.offset + outbox.length + stats.reconnects;
     }`,
  );
  writeFileSync(
    join(dir, "tsconfig.json"),
    JSON.stringify({
      compilerOptions: { target: "es2022", module: "es2022", moduleResolution: "bundler", strict: true, noEmit: true, lib: ["es2022", "dom"] },
      include: ["src/typed.ts"],
    }),
  );
  execFileSync(join(js, "node_modules/.bin/tsc"), ["-p", join(dir, "tsconfig.json")], { cwd: dir, stdio: "inherit" });

  const server = await startServer({ demoDir: out });
  const browser = await launch();
  try {
    const page = await browser.newPage();
    page.on("pageerror", (e) => console.error("[consumer]", e.message));
    await page.goto(server.base + "/index.html");
    const result = await waitFor(() => page.evaluate(() => window.result), { what: "page result" });
    assert.deepEqual(result, { offset: 1, data: { where: "page" }, code: "publish_to_pattern", state: "disconnected" });
    const worker = await waitFor(() => page.evaluate(() => window.workerResult), { what: "worker result" });
    assert.deepEqual(worker, { offset: 1, data: { where: "worker" }, code: "publish_to_pattern", state: "disconnected" });
  } finally {
    await browser.close();
    await server.stop();
    cleanup(dir);
  }
});
