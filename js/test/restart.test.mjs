// The server is killed and restarted (same port, same --data-dir): tabs show
// Reconnecting, then Live, and the messages they missed appear once, in order.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  cleanup, launch, openDemo, post, postsOf, serverPost, startProxy, startServer, statusOf, tempDir, waitFor,
} from "./helpers.mjs";

test("server restart: Reconnecting, then Live, missed posts once and in order", { timeout: 120000 }, async () => {
  const dataDir = tempDir();
  let server = await startServer({ dataDir });
  const port = server.port;
  // Alice goes through a proxy that stays cut a little longer, so she surely misses posts.
  const proxy = await startProxy(port);
  const browser = await launch();
  try {
    const aliceContext = await browser.newContext();
    const alice = await openDemo(aliceContext, proxy.base, "alice");
    const bob = await openDemo(await browser.newContext(), server.base, "bob");
    for (const page of [alice, bob]) await waitFor(async () => (await statusOf(page)) === "Live", { what: "Live" });
    await post(alice, "r1");
    await waitFor(async () => (await postsOf(bob)).includes("r1"), { what: "r1" });

    await server.kill();
    proxy.cut();
    for (const page of [alice, bob]) {
      await waitFor(async () => /^Reconnecting/.test(await statusOf(page)), { what: "Reconnecting" });
    }

    server = await startServer({ dataDir, port });
    await waitFor(async () => (await statusOf(bob)) === "Live", { what: "bob Live after restart", timeout: 40000 });
    await post(bob, "r2");
    await post(bob, "r3");
    // r4 after r3 is stored, so the expected order is well defined.
    await waitFor(
      async () => (await bob.locator('#posts li[data-delivery="sent"] .text').allTextContents()).includes("r3"),
      { what: "r3 acked" },
    );
    await serverPost(server.base, "r4");
    await waitFor(async () => (await postsOf(bob)).includes("r4"), { what: "bob sees r4" });

    proxy.restore();
    // Coming back online retries at once (instead of waiting out the backoff).
    await aliceContext.setOffline(true);
    await aliceContext.setOffline(false);
    await waitFor(async () => (await statusOf(alice)) === "Live", { what: "alice Live after restart", timeout: 40000 });
    const expected = ["r1", "r2", "r3", "r4"];
    await waitFor(async () => (await postsOf(alice)).length >= 4, { what: "alice catches up" });
    await new Promise((r) => setTimeout(r, 1000));
    assert.deepEqual(await postsOf(alice), expected);
    assert.deepEqual(await postsOf(bob), expected);
  } finally {
    await browser.close();
    await proxy.close();
    await server.stop();
    cleanup(dataDir);
  }
});
