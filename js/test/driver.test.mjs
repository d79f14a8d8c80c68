// The browser driver (js/src/driver.ts) and its IndexedDB store (js/src/store.ts) in
// headless Chromium: the store's order and namespaces across reopen, durable offline
// publishes restored by the next client, batched events with re-entrant listeners, the
// fallback to memory when IndexedDB fails, the takeover position floor, closed drivers,
// a start while offline and a token provider failing at start-up. The page
// loads an esbuild bundle of the two modules and the wasm core, served by the reference
// server's static file option.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import * as esbuild from "esbuild";
import { cleanup, launch, root, startServer, tempDir } from "./helpers.mjs";

let dir, server, browser, page;

before(async () => {
  dir = tempDir("tidings-driver-");
  mkdirSync(dir, { recursive: true });
  const entry = join(dir, "entry.ts");
  writeFileSync(
    entry,
    `export { Driver } from ${JSON.stringify(join(root, "js/src/driver.ts"))};
     export { Store } from ${JSON.stringify(join(root, "js/src/store.ts"))};
     export { createClient } from ${JSON.stringify(join(root, "js/src/index.ts"))};
     export { default as initWasm } from ${JSON.stringify(join(root, "js/wasm/tidings_wasm.js"))};`,
  );
  await esbuild.build({ entryPoints: [entry], outfile: join(dir, "driver.js"), bundle: true, format: "esm", logLevel: "warning" });
  await esbuild.stop();
  copyFileSync(join(root, "js/wasm/tidings_wasm_bg.wasm"), join(dir, "tidings_wasm_bg.wasm"));
  writeFileSync(
    join(dir, "index.html"),
    `<!doctype html><script type="module">
       import * as m from "./driver.js";
       await m.initWasm({ module_or_path: new URL("./tidings_wasm_bg.wasm", import.meta.url) });
       window.m = m; window.ready = true;
     </script>`,
  );
  server = await startServer({ demoDir: dir });
  browser = await launch();
  page = await browser.newPage();
  page.on("pageerror", (e) => console.error("[page] error:", e.message));
  await page.goto(server.base + "/index.html");
  await page.waitForFunction(() => window.ready === true);
});

after(async () => {
  await browser?.close();
  await server?.stop();
  cleanup(dir);
});

// A server port nothing listens on: clients stay offline.
const OFFLINE_URL = "ws://127.0.0.1:9/ws";

test("store: outbox order, positions and pattern times survive reopen; clear wipes one namespace", async () => {
  const result = await page.evaluate(async () => {
    const { Store } = window.m;
    const entry = (id, text) => ({ msg_id: id, channel: "c", event: "e", data: { text }, created_at_ms: 1, user: null });
    const a = (await Store.open("ns-a")).store;
    const b = (await Store.open("ns-b")).store;
    for (const id of ["m3", "m1", "m2"]) await a.apply({ op: "put_message", entry: entry(id, id) });
    await a.apply({ op: "put_message", entry: entry("m1", "m1 again") }); // keeps its place
    await a.apply({ op: "remove_message", msg_id: "m2" });
    await a.apply({ op: "put_position", channel: "news", position: { epoch: "e1", offset: 7 } });
    await a.apply({ op: "put_pattern_since", pattern: "team:*", since: 1234 });
    await b.apply({ op: "put_message", entry: entry("other", "other") });
    a.close();
    const again = (await Store.open("ns-a")).store;
    const loaded = JSON.parse(await again.load());
    await again.apply({ op: "clear" });
    const cleared = JSON.parse(await (await Store.open("ns-a")).store.load());
    const untouched = JSON.parse(await (await Store.open("ns-b")).store.load());
    const memory = Store.memory("ns-a");
    await memory.apply({ op: "put_message", entry: entry("x", "x") });
    return { loaded, cleared, untouched, durable: again.durable, memoryDurable: memory.durable, memory: await memory.load() };
  });
  assert.deepEqual(result.loaded.outbox.map((e) => [e.msg_id, e.data.text]), [["m3", "m3"], ["m1", "m1 again"]]);
  assert.deepEqual(result.loaded.positions, { news: { epoch: "e1", offset: 7 } });
  assert.deepEqual(result.loaded.pattern_since, { "team:*": 1234 });
  assert.deepEqual(result.cleared, { outbox: [], positions: {}, pattern_since: {} });
  assert.deepEqual(result.untouched.outbox.map((e) => e.msg_id), ["other"]);
  assert.equal(result.durable, true);
  assert.equal(result.memoryDurable, false);
  assert.equal(result.memory, "{}");
});

test("driver: an offline publish is durable and restored by the next client; listeners may call back", async () => {
  const result = await page.evaluate(async (url) => {
    const { Driver } = window.m;
    const options = JSON.stringify({ url, token: "x.eyJzdWIiOiJkYW4ifQ.s" }); // sub: dan
    const batches = [];
    let reentered;
    const first = await Driver.create(
      options,
      (json) => {
        const events = JSON.parse(json);
        batches.push(events.map((e) => e.type + ":" + (e.status?.status ?? e.new?.state ?? "")));
        // A listener calling back into the client (no "recursive use" error).
        reentered ??= JSON.parse(first.outbox()).length;
      },
      { flush: "microtask" },
    );
    const sent = first.publish("news", "post", JSON.stringify({ text: "héllo" }));
    const queuedId = await sent.queued;
    await first.whenStored();
    await new Promise((r) => setTimeout(r, 10));
    let ackError;
    sent.acked.catch((e) => (ackError = e.code));
    first.close();
    await new Promise((r) => setTimeout(r, 0));
    const second = await Driver.create(options, () => {}, { flush: "microtask" });
    const outbox = JSON.parse(second.outbox());
    let bad;
    try {
      second.publish("bad name", "e", "1");
    } catch (e) {
      bad = [e.name, e.code];
    }
    second.close();
    return { msgId: sent.msgId, queuedId, batches, reentered, ackError, outbox, bad, ns: second.namespace };
  }, OFFLINE_URL);
  assert.equal(result.queuedId, result.msgId);
  assert.equal(result.ns, `tidings|${OFFLINE_URL}|dan`);
  assert.ok(result.batches.length >= 1);
  assert.ok(result.batches.flat().includes("message:queued"), JSON.stringify(result.batches));
  assert.equal(result.reentered, 1);
  assert.equal(result.ackError, "closed");
  assert.deepEqual(result.outbox.map((m) => [m.msg_id, m.data.text, m.status.status]), [[result.msgId, "héllo", "queued"]]);
  assert.deepEqual(result.bad, ["TidingsError", "invalid_channel"]);
});

test("driver: a failing store warns and the client carries on in memory", async () => {
  const result = await page.evaluate(async (url) => {
    const { Driver } = window.m;
    const events = [];
    const client = await Driver.create(
      JSON.stringify({ url, token: "x.eyJzdWIiOiJlZGEifQ.s" }), // sub: eda
      (json) => events.push(...JSON.parse(json)),
      { flush: "microtask" },
    );
    client.closeStoreForTests();
    const sent = client.publish("news", "post", "1");
    const queued = await sent.queued.then(() => "queued", (e) => e.code);
    await new Promise((r) => setTimeout(r, 10));
    const outbox = JSON.parse(client.outbox()).map((m) => m.status.status);
    const durable = client.durable;
    const after = client.publish("news", "post", "2");
    await after.queued;
    client.close();
    return { queued, warnings: events.filter((e) => e.type === "store_warning").length, outbox, durable };
  }, OFFLINE_URL);
  assert.equal(result.queued, "queued", "the message is still queued (in memory)");
  assert.equal(result.warnings, 1);
  assert.deepEqual(result.outbox, ["queued"]);
  assert.equal(result.durable, false);
});

test("driver: a tab taking over resumes from the older of the stored and the received positions", async () => {
  const positions = await page.evaluate(async (url) => {
    const { Driver, Store } = window.m;
    const options = JSON.stringify({ url, token: "x.eyJzdWIiOiJmbG8ifQ.s" }); // sub: flo
    const { store } = await Store.open(`tidings|${url}|flo`);
    await store.apply({ op: "put_position", channel: "a", position: { epoch: "e", offset: 9 } });
    await store.apply({ op: "put_position", channel: "b", position: { epoch: "e", offset: 3 } });
    await store.apply({ op: "put_position", channel: "c", position: { epoch: "old", offset: 2 } });
    store.close();
    const floor = JSON.stringify({
      a: { epoch: "e", offset: 5 }, // older: wins
      b: { epoch: "e", offset: 8 }, // newer: stored stays
      c: { epoch: "new", offset: 1 }, // other epoch: stored stays
      d: { epoch: "e", offset: 4 }, // unknown to the store: added
    }).replace("{", '{"__proto__":{"epoch":"e","offset":6},'); // a channel named __proto__
    const client = await Driver.create(options, () => {}, { positions: floor });
    const out = JSON.parse(client.positions());
    client.close();
    const proto = Object.hasOwn(out, "__proto__") ? out["__proto__"] : "missing";
    delete out["__proto__"];
    return { ...out, proto };
  }, OFFLINE_URL);
  assert.deepEqual(positions, {
    a: { epoch: "e", offset: 5 },
    b: { epoch: "e", offset: 3 },
    c: { epoch: "old", offset: 2 },
    d: { epoch: "e", offset: 4 },
    proto: { epoch: "e", offset: 6 },
  });
});

test("driver: a token provider that throws at once fails the attempt without re-entering the driver", async () => {
  const url = server.base.replace("http", "ws") + "/ws";
  const result = await page.evaluate(async (url) => {
    const { Driver } = window.m;
    const events = [];
    const client = await Driver.create(
      JSON.stringify({ url, user: "ida", reconnect: { base_delay_ms: 200, max_delay_ms: 200 } }),
      (json) => events.push(...JSON.parse(json)),
      {
        getToken: () => {
          throw new Error("no session");
        },
        flush: "microtask",
      },
    );
    client.connect().catch(() => {});
    await new Promise((r) => setTimeout(r, 100));
    const states = events.filter((e) => e.type === "state").map((e) => e.new.state);
    const now = JSON.parse(client.state()).state;
    const errors = events.filter((e) => e.type === "error").map((e) => e.error.code);
    client.close();
    return { states, now, errors };
  }, url);
  assert.equal(result.now, "reconnecting");
  assert.equal(result.states.at(-1), "reconnecting", JSON.stringify(result.states));
  assert.ok(result.errors.includes("token_provider"), JSON.stringify(result.errors));
});

test("driver: tokens from getToken are refreshed on the live connection before they expire", async () => {
  // Tokens that live 4 s, minted here with the server's development secret (HS256).
  const { createHmac } = await import("node:crypto");
  const b64 = (x) => Buffer.from(typeof x === "string" ? x : JSON.stringify(x)).toString("base64url");
  let minted = 0;
  await page.exposeFunction("mintShortToken", () => {
    minted += 1;
    const head = b64({ alg: "HS256", typ: "JWT" });
    const body = b64({ sub: "gus", exp: Math.floor(Date.now() / 1000) + 4, channels: ["*"], publish: ["*"] });
    const sig = createHmac("sha256", "tidings-dev-secret").update(`${head}.${body}`).digest("base64url");
    return `${head}.${body}.${sig}`;
  });
  const url = server.base.replace("http", "ws") + "/ws";
  const started = page.evaluate(async (url) => {
    const { Driver } = window.m;
    const events = [];
    const client = await Driver.create(
      JSON.stringify({ url, user: "gus", token_refresh_margin_ms: 2500 }),
      (json) => events.push(...JSON.parse(json)),
      { getToken: () => window.mintShortToken(), flush: "microtask" },
    );
    await client.connect();
    await client.subscribe("news");
    window.tokenClient = { client, events };
  }, url);
  await started;
  // Past the first token's expiry (4 s): the connection must still be the first one.
  await new Promise((r) => setTimeout(r, 5500));
  const { serverPublish } = await import("./helpers.mjs");
  const published = await serverPublish(server.base, "news", "late", { n: 1 });
  assert.equal(published.status, 200, published.body);
  const result = await page.evaluate(async () => {
    const { client, events } = window.tokenClient;
    for (let i = 0; i < 50 && !events.some((e) => e.type === "publication"); i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    const stats = JSON.parse(client.stats());
    client.close();
    return {
      got: events.filter((e) => e.type === "publication").map((e) => e.event),
      reconnects: stats.reconnects,
      errors: events.filter((e) => e.type === "error").map((e) => e.error.code),
      state: stats.state,
    };
  });
  assert.deepEqual(result.got, ["late"]);
  assert.equal(result.state, "connected");
  assert.equal(result.reconnects, 0, "refreshed in place, not reconnected");
  assert.deepEqual(result.errors, []);
  assert.ok(minted >= 2, `the provider was asked again (${minted} tokens)`);
});

test("driver: a real QuotaExceededError from IndexedDB warns and the client carries on in memory", async () => {
  // A fresh context: no IndexedDB connection of the earlier tests is open in it (an open
  // connection keeps the quota it started with).
  const context = await browser.newContext();
  const fresh = await context.newPage();
  const cdp = await context.newCDPSession(fresh);
  const origin = new URL(server.base).origin;
  await cdp.send("Storage.overrideQuotaForOrigin", { origin, quotaSize: 256 * 1024 });
  try {
    await fresh.goto(server.base + "/index.html");
    await fresh.waitForFunction(() => window.ready === true);
    const result = await fresh.evaluate(async (url) => {
      const { Driver, Store } = window.m;
      const ns = `tidings|${url}|hal`;
      // A position stored while there is room.
      const before = (await Store.open(ns)).store;
      await before.apply({ op: "put_position", channel: "news", position: { epoch: "e", offset: 3 } });
      before.close();
      const events = [];
      const client = await Driver.create(
        JSON.stringify({ url, token: "x.eyJzdWIiOiJoYWwifQ.s" }), // sub: hal
        (json) => events.push(...JSON.parse(json)),
        { flush: "microtask" },
      );
      // Each message is ~60 KB of random hex (the database compresses): the quota (256 KiB
      // for the whole origin) runs out.
      const noise = () => Array.from(crypto.getRandomValues(new Uint8Array(30_000)), (b) => b.toString(16).padStart(2, "0")).join("");
      const outcomes = [];
      for (let i = 0; i < 8; i++) {
        const big = JSON.stringify({ text: noise() });
        outcomes.push(await client.publish("news", "post", big).queued.then(() => "queued", (e) => e.code));
      }
      await new Promise((r) => setTimeout(r, 20));
      const warnings = events.filter((e) => e.type === "store_warning").map((e) => e.message);
      const outbox = JSON.parse(client.outbox()).map((m) => m.status.status);
      const durable = client.durable;
      client.close();
      await new Promise((r) => setTimeout(r, 50));
      const stored = JSON.parse(await (await Store.open(ns)).store.load());
      return { outcomes, warnings, outbox, durable, stored };
    }, OFFLINE_URL);
    assert.deepEqual(result.outcomes, Array(8).fill("queued"));
    assert.equal(result.warnings.length, 1, JSON.stringify(result));
    assert.match(result.warnings[0], /Quota/i);
    assert.deepEqual(result.outbox, Array(8).fill("queued"), "nothing accepted is lost");
    assert.equal(result.durable, false);
    assert.deepEqual(result.stored.positions, {}, "stale positions dropped");
    assert.ok(result.stored.outbox.length >= 1, "what was durable stays queued");
  } finally {
    await context.close();
  }
});

test("client: a getToken that fails at start-up is asked again; the client then connects", async () => {
  const url = server.base.replace("http", "ws") + "/ws";
  const result = await page.evaluate(async (url) => {
    let calls = 0;
    const errors = [];
    const client = window.m.createClient({
      url,
      shareConnection: false,
      storage: "memory",
      getToken: async () => {
        if (++calls === 1) throw new Error("network down at page load");
        return (await (await fetch("/api/dev/token?user=jo")).json()).token;
      },
    });
    client.on("error", (e) => errors.push(e.code));
    await client.connect();
    const state = client.state;
    client.close();
    return { calls, errors, state };
  }, url);
  assert.equal(result.state, "connected");
  assert.ok(result.calls >= 2, JSON.stringify(result));
  assert.deepEqual(result.errors.slice(0, 1), ["token_provider"]);
});

test("driver: a closed driver refuses calls with `closed` and opens no socket", async () => {
  const url = server.base.replace("http", "ws") + "/ws";
  const result = await page.evaluate(async (url) => {
    const { Driver } = window.m;
    const opened = [];
    const Native = window.WebSocket;
    window.WebSocket = class extends Native {
      constructor(...args) {
        super(...args);
        opened.push(args[0]);
      }
    };
    try {
      const token = (await (await fetch("/api/dev/token?user=kai")).json()).token;
      const client = await Driver.create(JSON.stringify({ url, token }), () => {}, { storage: "memory", flush: "microtask" });
      await client.connect();
      client.close();
      const codes = [];
      await client.connect().catch((e) => codes.push(e.code));
      await client.subscribe("news").catch((e) => codes.push(e.code));
      try {
        client.publish("news", "post", "{}");
      } catch (e) {
        codes.push(e.code);
      }
      client.disconnect(); // no-op, no throw
      await new Promise((r) => setTimeout(r, 300));
      return { opened: opened.length, codes };
    } finally {
      window.WebSocket = Native;
    }
  }, url);
  assert.equal(result.opened, 1, "only the socket of the first connect");
  assert.deepEqual(result.codes, ["closed", "closed", "closed"]);
});

test("driver: a client started while the browser is offline opens no socket until online", async () => {
  const url = server.base.replace("http", "ws") + "/ws";
  const context = page.context();
  const token = await page.evaluate(async () => (await (await fetch("/api/dev/token?user=lou")).json()).token);
  await context.setOffline(true);
  try {
    const result = await page.evaluate(async ({ url, token }) => {
      const { Driver } = window.m;
      const opened = [];
      const Native = window.WebSocket;
      window.WebSocket = class extends Native {
        constructor(...args) {
          super(...args);
          opened.push(args[0]);
        }
      };
      try {
        const onLine = navigator.onLine;
        const events = [];
        const client = await Driver.create(JSON.stringify({ url, token }), (j) => events.push(...JSON.parse(j)), {
          storage: "memory",
          flush: "microtask",
        });
        const connected = client.connect();
        await new Promise((r) => setTimeout(r, 1500));
        const whileOffline = opened.length;
        const stateOffline = JSON.parse(client.state()).state;
        window.tidingsOfflineClient = client;
        window.tidingsConnected = connected.then(() => "connected", (e) => e.code);
        return { onLine, whileOffline, stateOffline };
      } finally {
        window.WebSocket = Native;
      }
    }, { url, token });
    assert.equal(result.onLine, false);
    assert.equal(result.whileOffline, 0, "no socket while offline");
    assert.notEqual(result.stateOffline, "failed");
  } finally {
    await context.setOffline(false);
  }
  const outcome = await page.evaluate(async () => {
    window.tidingsOfflineClient.lifecycle("online");
    const outcome = await window.tidingsConnected;
    window.tidingsOfflineClient.close();
    return outcome;
  });
  assert.equal(outcome, "connected");
});
