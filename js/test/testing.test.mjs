// The in-memory test double (`tidings/testing`), in Node: what app developers use in unit
// tests. Same API as the real client.
import { test } from "node:test";
import assert from "node:assert/strict";
import { TidingsError } from "../dist/index.js";
import { createTestClient, createTestServer } from "../dist/testing.js";

test("test clients publish to each other, in batches, with acks", async () => {
  const server = createTestServer();
  const alice = createTestClient({ server, user: "alice" });
  const bob = createTestClient({ server, user: "bob" });
  await Promise.all([alice.ready, bob.ready]);
  assert.equal(bob.state, "connected");
  const room = bob.channel("room:1");
  assert.equal(room, bob.channel("room:1"), "one handle per name");
  const seen = [];
  const off = room.on("publication", (p) => seen.push(p));
  await room.subscribe();
  assert.equal(room.state, "subscribed");

  const iterator = room[Symbol.asyncIterator]();
  const first = iterator.next();
  const ack1 = await alice.channel("room:1").publish("post.created", { text: "hi" });
  const ack2 = await alice.publish("room:1", "post.created", { text: "again" });
  assert.deepEqual([ack1.offset, ack2.offset], [1, 2]);
  const batch = (await first).value;
  assert.ok(Array.isArray(batch) && batch.length >= 1);
  assert.equal(batch[0].data.text, "hi");
  assert.deepEqual(seen.map((p) => [p.offset, p.event, p.publisher.user]), [
    [1, "post.created", "alice"],
    [2, "post.created", "alice"],
  ]);
  await iterator.return();
  off();
  server.publish("room:1", "system", { text: "from the back end" });
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(seen.length, 2, "listener removed by its unsubscribe function");
});

test("offline: publishes wait in the outbox, can be cancelled, go out when back online", async () => {
  const server = createTestServer();
  const carol = createTestClient({ server, user: "carol" });
  const states = [];
  carol.on("state", (s) => states.push(s.state));
  await carol.ready;
  await new Promise((r) => setTimeout(r, 0));
  carol.setOnline(false);
  const sending = carol.publish("news", "a", { n: 1 });
  const doomed = carol.publish("news", "b", { n: 2 });
  await new Promise((r) => setTimeout(r, 0));
  const outbox = await carol.outbox();
  assert.deepEqual(outbox.map((m) => [m.event, m.status.status]), [["a", "queued"], ["b", "queued"]]);
  await carol.cancel(outbox[1].msgId);
  await assert.rejects(carol.cancel("nope"), (e) => e instanceof TidingsError && e.code === "unknown_message");
  carol.setOnline(true);
  const ack = await sending;
  assert.equal(ack.offset, 1);
  assert.equal((await carol.outbox()).length, 0);
  assert.ok(states.includes("reconnecting") && states.at(-1) === "connected", JSON.stringify(states));
  await assert.rejects(carol.publish("news*", "x", {}), (e) => e instanceof TidingsError && e.code === "publish_to_pattern");
  assert.equal(server.history.length, 1);
  await assert.rejects(doomed, (e) => e instanceof TidingsError && e.code === "cancelled");
});

test("offline: what others published meanwhile arrives once when back online", async () => {
  const server = createTestServer();
  const dan = createTestClient({ server, user: "dan" });
  const got = [];
  const recovered = [];
  dan.channel("news").on("publication", (p) => got.push(p.data.n));
  dan.channel("news").on("subscribed", (info) => recovered.push(info.recovered));
  await dan.channel("news").subscribe();
  assert.equal(dan.channel("news").state, "subscribed");
  server.publish("news", "post", { n: 1 });
  dan.setOnline(false);
  server.publish("news", "post", { n: 2 });
  server.publish("other", "post", { n: 99 });
  await new Promise((r) => setTimeout(r, 0));
  assert.deepEqual(got, [1]);
  dan.setOnline(true);
  dan.setOnline(true); // no second replay
  await new Promise((r) => setTimeout(r, 0));
  assert.deepEqual(got, [1, 2]);
  assert.equal(recovered.at(-1), true);
  assert.equal(typeof (await dan.stats()).sessionId, "string");
  dan.close();
});
