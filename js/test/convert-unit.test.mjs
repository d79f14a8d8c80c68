// Unit tests of the envelope conversions (js/src/convert.ts) in Node: createClient options
// to the core's snake_case options, and the core's stats to the public camelCase shape.
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import * as esbuild from "esbuild";
import { root } from "./helpers.mjs";

let convert;
before(async () => {
  const out = join(root, "js/test/.tmp/convert.mjs");
  mkdirSync(join(root, "js/test/.tmp"), { recursive: true });
  await esbuild.build({ entryPoints: [join(root, "js/src/convert.ts")], outfile: out, bundle: true, format: "esm", platform: "neutral", logLevel: "warning" });
  await esbuild.stop();
  convert = await import(pathToFileURL(out).href + "?" + Date.now());
});

test("createClient options become the core's snake_case options; the wrapper's own stay out", () => {
  const core = convert.coreOptions({
    url: "wss://x/ws",
    token: "t",
    user: undefined,
    getToken: () => "t",
    shareConnection: false,
    storage: "memory",
    autoConnect: true,
    lifecycle: true,
    wasm: new Uint8Array(8),
    delivery: "immediate",
    clientName: "app",
    tokenRefreshMarginMs: 5000,
    maxFrameBytes: 1024,
    reconnect: { baseDelayMs: 100, maxAttempts: null, factor: 1.5 },
    outbox: { maxMessages: 5, ttlMs: 60000, fullPolicy: "drop_oldest", maxInFlight: 2 },
  });
  assert.deepEqual(core, {
    url: "wss://x/ws",
    token: "t",
    client_name: "app",
    token_refresh_margin_ms: 5000,
    max_frame_bytes: 1024,
    reconnect: { base_delay_ms: 100, max_attempts: null, factor: 1.5 },
    outbox: { max_messages: 5, ttl_ms: 60000, full_policy: "drop_oldest", max_in_flight: 2 },
  });
});

test("stats come out camelCase, every counter included", () => {
  const stats = convert.stats({
    state: "connected", rtt_ms: 12, reconnects: 1, queue_depth: 2, subscriptions: 3,
    recoveries_succeeded: 4, recoveries_failed: 5, publications_delivered: 6,
    duplicates_dropped: 7, messages_acked: 8, client_id: "c", session_id: "s",
  });
  assert.deepEqual(stats, {
    state: "connected", rttMs: 12, reconnects: 1, queueDepth: 2, subscriptions: 3,
    recoveriesSucceeded: 4, recoveriesFailed: 5, publicationsDelivered: 6,
    duplicatesDropped: 7, messagesAcked: 8, clientId: "c", sessionId: "s",
  });
});
