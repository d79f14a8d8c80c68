// Two users in two browser contexts: a post from one appears in the other.
import { test } from "node:test";
import assert from "node:assert/strict";
import { launch, openDemo, post, postsOf, startServer, statusOf, waitFor } from "./helpers.mjs";

test("a post from one user appears for the other", { timeout: 60000 }, async () => {
  const server = await startServer();
  const browser = await launch();
  try {
    const alice = await openDemo(await browser.newContext(), server.base, "alice");
    const bob = await openDemo(await browser.newContext(), server.base, "bob");
    for (const page of [alice, bob]) {
      await waitFor(async () => (await statusOf(page)) === "Live", { what: "Live" });
    }
    await post(alice, "Hello from Alice");
    await waitFor(async () => (await postsOf(bob)).includes("Hello from Alice"), { what: "bob sees alice's post" });
    await waitFor(
      async () => (await alice.locator('#posts li[data-delivery="sent"] .text').allTextContents()).includes("Hello from Alice"),
      { what: "alice's post marked sent" },
    );
    await post(bob, "Hi Alice!");
    await waitFor(async () => (await postsOf(alice)).includes("Hi Alice!"), { what: "alice sees bob's reply" });
    assert.deepEqual(await postsOf(bob), ["Hello from Alice", "Hi Alice!"]);
    assert.deepEqual(await postsOf(alice), ["Hello from Alice", "Hi Alice!"]);
  } finally {
    await browser.close();
    await server.stop();
  }
});

test("a hidden tab (no animation frames) still gets and shows posts at once", { timeout: 60000 }, async () => {
  const server = await startServer();
  const browser = await launch();
  try {
    const hiddenContext = await browser.newContext();
    // Headless pages are always visible: pretend this one is a background tab.
    await hiddenContext.addInitScript(() => {
      Object.defineProperty(Document.prototype, "visibilityState", { get: () => "hidden", configurable: true });
      Object.defineProperty(Document.prototype, "hidden", { get: () => true, configurable: true });
    });
    const dana = await openDemo(hiddenContext, server.base, "dana");
    const eve = await openDemo(await browser.newContext(), server.base, "eve");
    for (const page of [dana, eve]) await waitFor(async () => (await statusOf(page)) === "Live", { what: "Live" });
    assert.equal(await dana.evaluate(() => document.visibilityState), "hidden");
    await post(eve, "to the background");
    await waitFor(async () => (await postsOf(dana)).includes("to the background"), { what: "hidden tab gets it" });
    await post(dana, "from the background");
    await waitFor(async () => (await postsOf(eve)).includes("from the background"), { what: "eve gets it" });
  } finally {
    await browser.close();
    await server.stop();
  }
});
