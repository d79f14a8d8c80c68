// Three tabs of one user share one WebSocket; when the leader tab closes or freezes,
// another takes over, and every event reaches every remaining tab exactly once.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  connections, counts, isLeader, launch, openDemo, post, serverPost, startServer, statusOf, waitFor,
} from "./helpers.mjs";

// Headless Chromium does not freeze a visible page on `Page.setWebLifecycleState` (its
// timers keep running), so the test also stops the page's JavaScript with the debugger:
// like a frozen tab, it runs no timers and answers no messages, and it keeps its Web Lock.
async function freeze(cdp) {
  await cdp.send("Page.setWebLifecycleState", { state: "frozen" });
  await cdp.send("Debugger.enable");
  await cdp.send("Debugger.pause");
}

async function unfreeze(cdp) {
  await cdp.send("Debugger.resume");
  await cdp.send("Debugger.disable");
  await cdp.send("Page.setWebLifecycleState", { state: "active" });
}

async function leaderOf(pages) {
  return waitFor(
    async () => {
      const flags = await Promise.all(pages.map(isLeader));
      return flags.filter(Boolean).length === 1 ? pages[flags.indexOf(true)] : null;
    },
    { what: "exactly one leader" },
  );
}

async function seenOnce(pages, texts) {
  for (const page of pages) {
    await waitFor(
      async () => {
        const c = await counts(page);
        return texts.every((t) => c[t] === 1) ? c : null;
      },
      { what: `every post once: ${texts.join(", ")}` },
    );
  }
  // And they stay once (no late duplicate).
  await new Promise((r) => setTimeout(r, 500));
  for (const page of pages) {
    const c = await counts(page);
    for (const t of texts) assert.equal(c[t], 1, `${t} shown ${c[t]} times`);
  }
}

test("three tabs, one socket; leader closed or frozen, another takes over", { timeout: 120000 }, async () => {
  const server = await startServer();
  const browser = await launch();
  try {
    const context = await browser.newContext();
    const tabs = [];
    for (let i = 0; i < 3; i++) tabs.push(await openDemo(context, server.base, "carol"));
    for (const page of tabs) await waitFor(async () => (await statusOf(page)) === "Live", { what: "Live" });
    await waitFor(async () => (await connections(server.base)) === 1, { what: "one connection" });
    await leaderOf(tabs);

    await serverPost(server.base, "m1");
    await seenOnce(tabs, ["m1"]);
    assert.equal(await connections(server.base), 1);

    // A follower publishes through the leader's outbox: shown once everywhere, acked.
    const follower = tabs[(await Promise.all(tabs.map(isLeader))).indexOf(false)];
    await post(follower, "from a follower");
    await seenOnce(tabs, ["from a follower"]);
    await waitFor(
      async () => (await follower.locator('#posts li[data-delivery="sent"] .text').allTextContents()).includes("from a follower"),
      { what: "follower's post acked" },
    );
    // Subscriptions are counted per tab: one tab leaving the channel does not stop the others.
    const quitter = tabs.find((p) => p !== follower);
    await quitter.evaluate(() => globalThis.tidings.channel("discussion:general").unsubscribe());
    await serverPost(server.base, "m1b");
    await seenOnce(tabs.filter((p) => p !== quitter), ["m1b"]);
    assert.equal((await counts(quitter)).m1b, undefined, "the tab that left gets nothing");
    await quitter.evaluate(() => globalThis.tidings.channel("discussion:general").subscribe());

    // One tab disconnecting does not close the shared socket; it reconnects at once.
    await quitter.evaluate(() => globalThis.tidings.disconnect());
    assert.equal(await statusOf(quitter), "Offline");
    await serverPost(server.base, "m1c");
    await seenOnce(tabs.filter((p) => p !== quitter), ["m1c"]);
    assert.equal(await connections(server.base), 1);
    await quitter.evaluate(() => globalThis.tidings.connect());
    await waitFor(async () => (await statusOf(quitter)) === "Live", { what: "Live after connect()" });

    // Close the leader tab: another takes over.
    let leader = await leaderOf(tabs);
    await leader.close({ runBeforeUnload: true });
    let remaining = tabs.filter((p) => p !== leader);
    const t0 = Date.now();
    leader = await leaderOf(remaining);
    await waitFor(async () => (await connections(server.base)) === 1, { what: "one connection after close" });
    console.log(`takeover after close: ${Date.now() - t0} ms`);
    await serverPost(server.base, "m2");
    await seenOnce(remaining, ["m1", "m2"]);

    // A third tab again, then freeze the leader.
    const fresh = await openDemo(context, server.base, "carol");
    remaining.push(fresh);
    await waitFor(async () => (await statusOf(fresh)) === "Live", { what: "new tab Live" });
    leader = await leaderOf(remaining);
    const cdp = await context.newCDPSession(leader);
    await freeze(cdp);
    const others = remaining.filter((p) => p !== leader);
    const t1 = Date.now();
    const next = await leaderOf(others);
    console.log(`takeover after freeze: ${Date.now() - t1} ms`);
    await waitFor(async () => (await statusOf(next)) === "Live", { what: "new leader Live" });
    await serverPost(server.base, "m3");
    await seenOnce(others, ["m3"]);
    await seenOnce(others.filter((p) => p !== fresh), ["m1", "m2"]);

    // The frozen tab wakes up and follows; it gets m3 once too.
    await unfreeze(cdp);
    await waitFor(async () => !(await isLeader(leader)), { what: "old leader follows" });
    await leaderOf(remaining);
    await serverPost(server.base, "m4");
    await seenOnce(remaining, ["m3", "m4"]);
    await waitFor(async () => (await connections(server.base)) === 1, { what: "one connection at the end" });
  } finally {
    await browser.close();
    await server.stop();
  }
});
