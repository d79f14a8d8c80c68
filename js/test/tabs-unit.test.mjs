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

const TIMING = { heartbeatMs: 20, takeoverMs: 150, hiddenTakeoverMs: 150, aliveMs: 20, followerExpiryMs: 400 };

/** What IndexedDB holds, shared by the fake drivers of one "browser" (`persist: false`:
 * writes never finish; `keep: false`: a memory-only store, nothing survives a driver). */
function world() {
  return { outbox: new Set(), drivers: [], nextId: 1, persist: true, keep: true };
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
    // What it restored from the store at start, and what it queued itself.
    this.restored = new Set(w.keep ? w.outbox : []);
    this.mine = new Set();
    w.drivers.push(this);
  }
  connect() { return Promise.resolve(); }
  disconnect() {}
  clear() { return Promise.resolve(); }
  subscribe(channel) { this.subs.add(channel); return Promise.resolve(); }
  unsubscribe(channel) { this.subs.delete(channel); return Promise.resolve(); }
  /** Like the core: a chosen id already in the (restored) outbox is not queued again. */
  publish(channel, event, json, msgId) {
    msgId ||= "m" + this.world.nextId++;
    if (!this.restored.has(msgId) && !this.mine.has(msgId)) {
      this.published.push({ msgId, channel, event, json });
      this.mine.add(msgId);
      if (this.world.persist) this.world.outbox.add(msgId);
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

/** Two tabs of one namespace, once one leads (`first`: its driver). */
async function twoTabs(w) {
  const a = tab(namespace(), w);
  const b = tab(a.group.channel.name.slice("tidings:".length), w);
  const leader = await electOne([a, b]);
  return { a, b, leader, follower: leader === a ? b : a, first: driverOf(w) };
}
let n = 0;
const namespace = () => `unit-${process.pid}-${n++}`;

test("a durable publish whose leader dies before the ack is acked by the next leader, not sent twice", async () => {
  const w = world();
  const { leader, follower, first } = await twoTabs(w);
  const sending = follower.group.publish("room", "post", '{"text":"hi"}');
  await waitFor(() => first.published.length === 1, { what: "leader publishes", timeout: 2000, interval: 5 });
  const { msgId } = first.published[0];
  assert.ok([...follower.group.requests.values()].some((r) => r.msgId === msgId), "the follower chose the id");
  assert.ok(w.outbox.has(msgId), "durable in the outbox");

  crash(leader);
  await waitFor(() => follower.group.isLeader, { what: "takeover", timeout: 3000, interval: 10 });
  const second = driverOf(w);
  assert.notEqual(second, first);
  await sleep(100);
  assert.equal(second.published.length, 0, "not queued again: it is in the restored outbox");
  second.ack(msgId, 7); // the new leader sends the restored message; the server acks it
  assert.deepEqual(await sending, { msgId, epoch: "e", offset: 7 });
  follower.group.close();
});

test("a publish the dead leader never made durable is published again, once", async () => {
  const w = world();
  w.persist = false; // the leader dies before IndexedDB confirmed the write
  const { leader, follower, first } = await twoTabs(w);
  const sending = follower.group.publish("room", "post", "{}");
  await waitFor(() => first.published.length === 1, { what: "leader publishes", timeout: 2000, interval: 5 });

  crash(leader);
  w.persist = true;
  await waitFor(() => follower.group.isLeader, { what: "takeover", timeout: 3000, interval: 10 });
  const second = driverOf(w);
  await waitFor(() => second.published.length === 1, { what: "published again", timeout: 2000, interval: 5 });
  await sleep(100);
  assert.equal(second.published.length, 1, "exactly once");
  assert.equal(second.published[0].msgId, first.published[0].msgId, "same id: the server dedupes if the first got through");
  second.ack(second.published[0].msgId, 3);
  assert.equal((await sending).offset, 3);
  follower.group.close();
});

test("a publish queued by a leader with a memory-only outbox is published again by the next leader, same id", async () => {
  const w = world();
  w.keep = false; // storage: "memory", or IndexedDB failed: nothing survives the leader
  const { leader, follower, first } = await twoTabs(w);
  const sending = follower.group.publish("room", "post", "{}");
  await waitFor(() => first.published.length === 1, { what: "leader publishes", timeout: 2000, interval: 5 });
  let settled = false;
  sending.then(() => (settled = true), () => (settled = true));

  crash(leader);
  await waitFor(() => follower.group.isLeader, { what: "takeover", timeout: 3000, interval: 10 });
  const second = driverOf(w);
  await waitFor(() => second.published.length === 1, { what: "published again", timeout: 2000, interval: 5 });
  assert.equal(second.published[0].msgId, first.published[0].msgId);
  assert.equal(settled, false, "not reported as acked before a server said so");
  second.ack(second.published[0].msgId, 4);
  assert.equal((await sending).offset, 4);
  follower.group.close();
});

test("a stalled leader that wakes up and runs an old command publishes the same message id", async () => {
  const w = world();
  const { a, b, leader, follower, first } = await twoTabs(w);
  // The leader stalls (a long task): it stops beating and reading its messages.
  const inbox = [];
  const g = leader.group;
  clearInterval(g.heartbeat);
  const onmessage = g.channel.onmessage;
  g.channel.onmessage = (e) => inbox.push(e);
  const sending = follower.group.publish("room", "post", "{}");
  await waitFor(() => follower.group.isLeader, { what: "takeover", timeout: 3000, interval: 10 });
  const second = driverOf(w);
  await waitFor(() => second.published.length === 1, { what: "new leader publishes", timeout: 2000, interval: 5 });
  // It wakes up and works through what it missed, the publish command first.
  const cmd = inbox.findIndex((e) => e.data.t === "cmd");
  assert.ok(cmd >= 0);
  onmessage(inbox[cmd]);
  assert.equal(first.published.length, 1, "the old leader ran it too");
  assert.equal(first.published[0].msgId, second.published[0].msgId, "one id: the server stores it once");
  for (const e of inbox) onmessage(e);
  await waitFor(() => !g.isLeader, { what: "old leader steps down", timeout: 2000, interval: 5 });
  second.ack(second.published[0].msgId, 5);
  assert.equal((await sending).offset, 5);
  a.group.close();
  b.group.close();
});

test("a follower that goes silent loses its subscriptions; saying hello again restores them", async () => {
  const w = world();
  const a = tab(namespace(), w, ["shared"]);
  const ns = a.group.channel.name.slice("tidings:".length);
  const leader = await electOne([a]);
  assert.equal(leader, a);
  const b = tab(ns, w, ["shared", "only-b"]);
  const driver = driverOf(w);
  await waitFor(() => driver.subs.has("only-b"), { what: "b's channel subscribed", timeout: 2000, interval: 5 });
  // b freezes (no timers, no messages), without a bye.
  clearInterval(b.group.watchdog);
  const onmessage = b.group.channel.onmessage;
  b.group.channel.onmessage = () => {};
  await waitFor(() => !driver.subs.has("only-b"), { what: "b's channel released", timeout: 3000, interval: 10 });
  assert.ok(driver.subs.has("shared"), "a still wants its own");
  // b resumes: its hello brings its subscriptions back.
  b.group.channel.onmessage = onmessage;
  b.group.watchdog = setInterval(() => b.group.tick(), TIMING.heartbeatMs);
  b.group.resume();
  await waitFor(() => driver.subs.has("only-b"), { what: "b's channel back", timeout: 2000, interval: 5 });
  assert.ok(a.group.isLeader, "the leader stayed");
  b.group.close();
  a.group.close();
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
