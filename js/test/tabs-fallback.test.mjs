// Without Web Locks (older browsers, some embedded views) tabs still elect one leader by
// heartbeats over the BroadcastChannel: one socket, takeover when the leader tab closes.
import { test } from "node:test";
import assert from "node:assert/strict";
import { connections, counts, isLeader, launch, openDemo, serverPost, startServer, statusOf, waitFor } from "./helpers.mjs";

test("no Web Locks: heartbeat election, one socket, takeover on close", { timeout: 120000 }, async () => {
  const server = await startServer();
  const browser = await launch();
  try {
    const context = await browser.newContext();
    await context.addInitScript(() => {
      Object.defineProperty(Navigator.prototype, "locks", { get: () => undefined, configurable: true });
    });
    const tabs = [];
    for (let i = 0; i < 3; i++) tabs.push(await openDemo(context, server.base, "erin"));
    assert.equal(await tabs[0].evaluate(() => navigator.locks), undefined);
    for (const page of tabs) await waitFor(async () => (await statusOf(page)) === "Live", { what: "Live" });
    const leaders = async (pages) => (await Promise.all(pages.map(isLeader))).filter(Boolean).length;
    await waitFor(async () => (await leaders(tabs)) === 1, { what: "one leader" });
    await waitFor(async () => (await connections(server.base)) === 1, { what: "one connection" });
    await serverPost(server.base, "f1");
    for (const page of tabs) await waitFor(async () => (await counts(page)).f1 === 1, { what: "f1 once" });

    const leader = tabs[(await Promise.all(tabs.map(isLeader))).indexOf(true)];
    await leader.close({ runBeforeUnload: true });
    const rest = tabs.filter((p) => p !== leader);
    await waitFor(async () => (await leaders(rest)) === 1, { what: "a new leader" });
    await waitFor(async () => (await connections(server.base)) === 1, { what: "one connection again" });
    await serverPost(server.base, "f2");
    for (const page of rest) {
      await waitFor(async () => (await counts(page)).f2 === 1, { what: "f2 once" });
      assert.equal((await counts(page)).f1, 1);
    }
  } finally {
    await browser.close();
    await server.stop();
  }
});
