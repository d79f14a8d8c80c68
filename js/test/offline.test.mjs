// Offline: a post made while the network is cut waits in IndexedDB, survives closing
// every tab, and is sent (once) when the app is opened again online.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  counts, launch, openDemo, post, startProxy, startServer, statusOf, waitFor,
} from "./helpers.mjs";

const delivery = (page, text) =>
  page.evaluate((t) => {
    for (const li of document.querySelectorAll("#posts li")) {
      if (li.querySelector(".text")?.textContent === t) return li.dataset.delivery ?? "";
    }
    return null;
  }, text);

test("a post queued offline is sent from IndexedDB after a reload, exactly once", { timeout: 120000 }, async () => {
  const server = await startServer();
  // Alice reaches the server through a proxy the test can cut: Playwright's setOffline
  // does not close open WebSockets (it is used for the online/offline events).
  const proxy = await startProxy(server.port);
  const browser = await launch();
  try {
    const aliceContext = await browser.newContext();
    let alice = await openDemo(aliceContext, proxy.base, "alice");
    const bob = await openDemo(await browser.newContext(), server.base, "bob");
    for (const page of [alice, bob]) await waitFor(async () => (await statusOf(page)) === "Live", { what: "Live" });

    await post(alice, "before the tunnel");
    await waitFor(async () => (await counts(bob))["before the tunnel"] === 1, { what: "first post" });

    proxy.cut();
    await aliceContext.setOffline(true);
    await waitFor(async () => /Offline|Reconnecting/.test(await statusOf(alice)), { what: "alice offline" });
    await post(alice, "sent from the tunnel");
    assert.equal(await delivery(alice, "sent from the tunnel"), "sending");
    // Durable in the outbox (IndexedDB) before the tab goes away.
    await waitFor(
      async () => {
        const outbox = await alice.evaluate(() => globalThis.tidings.outbox());
        return outbox.some((m) => m.data.text === "sent from the tunnel" && m.status.status === "queued");
      },
      { what: "queued in the outbox" },
    );
    assert.equal(await delivery(alice, "sent from the tunnel"), "sending");

    // Close every tab of the app, come back online, open it again.
    await alice.close({ runBeforeUnload: true });
    await new Promise((r) => setTimeout(r, 500));
    assert.equal((await counts(bob))["sent from the tunnel"], undefined, "nothing leaked while cut");
    proxy.restore();
    await aliceContext.setOffline(false);
    alice = await openDemo(aliceContext, proxy.base, "alice");
    await waitFor(async () => (await statusOf(alice)) === "Live", { what: "alice Live again" });

    await waitFor(async () => (await counts(bob))["sent from the tunnel"] === 1, { what: "bob gets the queued post" });
    await waitFor(async () => (await delivery(alice, "sent from the tunnel")) === "sent", { what: "alice sees it acked" });
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal((await counts(bob))["sent from the tunnel"], 1, "delivered once to bob");
    assert.equal((await counts(alice))["sent from the tunnel"], 1, "shown once to alice");
    const outbox = await alice.evaluate(() => globalThis.tidings.outbox());
    assert.equal(outbox.length, 0, "outbox empty after the ack");

    // Log out: clear() wipes this user's positions and queue from IndexedDB.
    const stored = () =>
      alice.evaluate(
        () =>
          new Promise((resolve, reject) => {
            const open = indexedDB.open("tidings");
            open.onerror = () => reject(open.error);
            open.onsuccess = () => {
              const tx = open.result.transaction(["outbox", "positions"]);
              const counts = {};
              for (const name of ["outbox", "positions"]) {
                const r = tx.objectStore(name).count();
                r.onsuccess = () => (counts[name] = r.result);
              }
              tx.oncomplete = () => {
                open.result.close();
                resolve(counts);
              };
            };
          }),
      );
    assert.ok((await stored()).positions >= 1, "positions are kept in IndexedDB");
    await alice.evaluate(() => globalThis.tidings.clear());
    assert.deepEqual(await stored(), { outbox: 0, positions: 0 });
    assert.equal(await alice.evaluate(() => globalThis.tidings.state), "disconnected");
  } finally {
    await browser.close();
    await proxy.close();
    await server.stop();
  }
});
