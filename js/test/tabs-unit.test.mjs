// Unit tests of the tab protocol (js/src/tabs.ts) in Node: real BroadcastChannels, fast
// timers, and fake drivers in place of the wasm core, so the hard cases can be staged
// exactly: a leader that dies between accepting a follower's publish and its ack, before
// or after the message was durable; subscription reference counts; stale leaders.
// (Node has no Web Locks, so this is the heartbeat election; tabs.test.mjs covers Web Locks.)
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import * as esbuild from "esbuild";
import { root, sleep, waitFor } from "./helpers.mjs";

let TabGroup;
before(async () => {
  const out = join(root, "js/test/.tmp/tabs.mjs");
  mkdirSync(join(root, "js/test/.tmp"), { recursive: true });
  await esbuild.build({
    entryPoints: [join(root, "js/src/tabs.ts")],
    outfile: out,
    bundle: true,
    format: "esm",
    platform: "neutral",
    logLevel: "warning",
  });
  await esbuild.stop();
  ({ TabGroup } = await import(pathToFileURL(out).href + "?" + Date.now()));
});

const TIMING = { heartbeatMs: 20, takeoverMs: 150, hiddenTakeoverMs: 150 };

/** What IndexedDB holds, shared by the fake drivers of one "browser". */
function world() {
  return { outbox: new Set(), drivers: [], nextId: 1, persist: true };
}

class FakeDriver {
  constructor(config, w) {
    this.config = config;
    this.world = w;
    this.ready = Promise.resolve();
    this.subs = new Set();
    this.published = [];
    this.acks = new Map();
    this.closed = false;
    w.drivers.push(this);
  }
  connect() { return Promise.resolve(); }
  disconnect() {}
  clear() { return Promise.resolve(); }
  subscribe(channel) { this.subs.add(channel); return Promise.resolve(); }
  unsubscribe(channel) { this.subs.delete(channel); return Promise.resolve(); }
  publishWith(channel, event, json, accepted, queued) {
    const msgId = "m" + this.world.nextId++;
    this.published.push({ msgId, channel, event, json });
    accepted?.(msgId);
    if (this.world.persist) {
      this.world.outbox.add(msgId);
      queueMicrotask(() => queued?.(msgId));
    }
    return new Promise((resolve, reject) => this.acks.set(msgId, { resolve, reject }));
  }
  /** The server acked `msgId` (this driver sent it, or restored it from the outbox). */
  ack(msgId, offset) {
    this.world.outbox.delete(msgId);
    this.acks.get(msgId)?.resolve({ msgId, epoch: "e", offset });
    this.acks.delete(msgId);
    this.config.onBatch(JSON.stringify([
      { type: "message", msg_id: msgId, channel: "room", status: { status: "acked", epoch: "e", offset } },
    ]));
  }
  cancel() { return Promise.resolve(); }
  outbox() { return Promise.resolve([...this.world.outbox].map((msg_id) => ({ msg_id }))); }
  stats() { return Promise.resolve({}); }
  stateNow() { return { state: "connected" }; }
  lifecycle() {}
  setToken() {}
  close() {
    this.closed = true;
    for (const { reject } of this.acks.values()) reject({ code: "closed", message: "client is closed" });
    this.acks.clear();
  }
}

function tab(ns, w, subs = []) {
  const batches = [];
  const wanted = { subs, connect: true };
  const group = new TabGroup(
    ns,
    { options: "{}" },
    {
      onBatch: (json) => batches.push(JSON.parse(json)),
      onWelcome: () => {},
      onLeader: () => {},
      wanted: () => wanted,
      received: () => ({}),
    },
    { ...TIMING, makeLocal: (config) => new FakeDriver(config, w) },
  );
  return { group, batches, wanted };
}

/** A tab that dies without a word (crash, or frozen for good). */
function crash(t) {
  const g = t.group;
  clearInterval(g.heartbeat);
  clearInterval(g.watchdog);
  g.channel.close();
  g.closed = true;
}

async function electOne(tabs) {
  return waitFor(() => {
    const leaders = tabs.filter((t) => t.group.isLeader);
    return leaders.length === 1 ? leaders[0] : null;
  }, { what: "one leader", timeout: 3000, interval: 10 });
}

const driverOf = (w, leader) => w.drivers.filter((d) => !d.closed).at(-1) ?? leader;
let n = 0;
const namespace = () => `unit-${process.pid}-${n++}`;

test("a durable publish whose leader dies before the ack is acked by the next leader, not sent twice", async () => {
  const w = world();
  const a = tab(namespace(), w);
  const b = tab(a.group.channel.name.slice("tidings:".length), w);
  const leader = await electOne([a, b]);
  const follower = leader === a ? b : a;
  const first = driverOf(w);
  const sending = follower.group.publish("room", "post", '{"text":"hi"}');
  await waitFor(() => first.published.length === 1, { what: "leader publishes", timeout: 2000, interval: 5 });
  const { msgId } = first.published[0];
  await waitFor(() => [...follower.group.requests.values()].some((r) => r.msgId === msgId && r.queued),
    { what: "follower knows it is durable", timeout: 2000, interval: 5 });

  crash(leader);
  await waitFor(() => follower.group.isLeader, { what: "takeover", timeout: 3000, interval: 10 });
  const second = driverOf(w);
  assert.notEqual(second, first);
  await sleep(100);
  assert.equal(second.published.length, 0, "not published again: it is in the restored outbox");
  second.ack(msgId, 7); // the new leader sends the restored message; the server acks it
  assert.deepEqual(await sending, { msgId, epoch: "e", offset: 7 });
  follower.group.close();
});

test("a publish the dead leader never made durable is published again, once", async () => {
  const w = world();
  w.persist = false; // the leader dies before IndexedDB confirmed the write
  const a = tab(namespace(), w);
  const b = tab(a.group.channel.name.slice("tidings:".length), w);
  const leader = await electOne([a, b]);
  const follower = leader === a ? b : a;
  const first = driverOf(w);
  const sending = follower.group.publish("room", "post", "{}");
  await waitFor(() => first.published.length === 1, { what: "leader publishes", timeout: 2000, interval: 5 });

  crash(leader);
  w.persist = true;
  await waitFor(() => follower.group.isLeader, { what: "takeover", timeout: 3000, interval: 10 });
  const second = driverOf(w);
  await waitFor(() => second.published.length === 1, { what: "published again", timeout: 2000, interval: 5 });
  await sleep(100);
  assert.equal(second.published.length, 1, "exactly once");
  second.ack(second.published[0].msgId, 3);
  assert.equal((await sending).offset, 3);
  follower.group.close();
});

test("subscriptions are counted per tab; a closing tab releases its own", async () => {
  const w = world();
  const ns = namespace();
  const a = tab(ns, w, ["room"]);
  const b = tab(ns, w, ["room", "news"]);
  const leader = await electOne([a, b]);
  const other = leader === a ? b : a;
  const driver = driverOf(w);
  await waitFor(() => driver.subs.has("room") && driver.subs.has("news"), { what: "both subscribed", timeout: 2000, interval: 5 });
  await other.group.unsubscribe("room");
  assert.ok(driver.subs.has("room"), "still wanted by the leader's tab");
  await leader.group.unsubscribe("room");
  assert.ok(!driver.subs.has("room"), "released by the last tab");
  if (other === b) {
    other.group.close(); // bye: its "news" goes away
    await waitFor(() => !driver.subs.has("news"), { what: "released on bye", timeout: 2000, interval: 5 });
  }
  a.group.close();
  b.group.close();
});

test("events of an older leader epoch are ignored, and an old leader steps down", async () => {
  const w = world();
  const ns = namespace();
  const a = tab(ns, w);
  const b = tab(ns, w);
  const leader = await electOne([a, b]);
  const follower = leader === a ? b : a;
  await sleep(60);
  const raw = new BroadcastChannel("tidings:" + ns);
  const before = follower.batches.length;
  raw.postMessage({ t: "events", epoch: 1, from: "ghost", json: '[{"type":"error","error":{"code":"x","message":"x"}}]' });
  await sleep(60);
  assert.equal(follower.batches.length, before, "stale events dropped");
  // A newer leader appears (e.g. after a steal): the current one steps down.
  raw.postMessage({ t: "leader", epoch: Date.now() + 60_000, from: "zzzz-newer" });
  await waitFor(() => !leader.group.isLeader, { what: "old leader steps down", timeout: 2000, interval: 5 });
  raw.close();
  a.group.close();
  b.group.close();
});

test("the leader's own pending publish survives its stepping down (freeze) and is acked via the next leader", async () => {
  const w = world();
  const ns = namespace();
  const a = tab(ns, w);
  const b = tab(ns, w);
  const leader = await electOne([a, b]);
  const other = leader === a ? b : a;
  const first = driverOf(w);
  const sending = leader.group.publish("room", "post", "{}");
  await waitFor(() => first.published.length === 1, { what: "published", timeout: 2000, interval: 5 });
  const { msgId } = first.published[0];
  await sleep(10);
  leader.group.suspend(); // `freeze`: resigns, closes its driver (pending acks reject `closed`)
  assert.ok(first.closed);
  await waitFor(() => other.group.isLeader, { what: "takeover", timeout: 3000, interval: 10 });
  const second = driverOf(w);
  await sleep(100);
  assert.equal(second.published.length, 0, "in the restored outbox, not published again");
  second.ack(msgId, 11);
  assert.deepEqual(await sending, { msgId, epoch: "e", offset: 11 });
  a.group.close();
  b.group.close();
});
