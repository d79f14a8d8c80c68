// The core speaks snake_case JSON; the public API is camelCase. These convert the
// envelopes only, never application `data`.
import { toError } from "./errors.js";
import type {
  ConnectionState,
  MessageStatus,
  PendingMessage,
  Publication,
  Stats,
  SubscriptionStateName,
  TidingsEvent,
} from "./types.js";

/* eslint-disable @typescript-eslint/no-explicit-any */
type Raw = any;

export function state(raw: Raw): ConnectionState {
  const s: ConnectionState = { state: raw?.state ?? "disconnected" };
  if (raw?.attempt !== undefined) s.attempt = raw.attempt;
  if (raw && "retry_in_ms" in raw) s.retryInMs = raw.retry_in_ms;
  if (raw?.code !== undefined) s.code = raw.code;
  if (raw?.message !== undefined) s.message = raw.message;
  return s;
}

export function status(raw: Raw): MessageStatus {
  if (raw.status === "failed") return { status: "failed", error: toError(raw.error) };
  return raw;
}

export function pending(raw: Raw): PendingMessage {
  return {
    msgId: raw.msg_id,
    channel: raw.channel,
    event: raw.event,
    data: raw.data,
    createdAtMs: raw.created_at_ms,
    user: raw.user,
    status: status(raw.status),
  };
}

export function stats(raw: Raw): Stats {
  return {
    state: raw.state,
    rttMs: raw.rtt_ms,
    reconnects: raw.reconnects,
    queueDepth: raw.queue_depth,
    subscriptions: raw.subscriptions,
    recoveriesSucceeded: raw.recoveries_succeeded,
    recoveriesFailed: raw.recoveries_failed,
    publicationsDelivered: raw.publications_delivered,
    duplicatesDropped: raw.duplicates_dropped,
    messagesAcked: raw.messages_acked,
    clientId: raw.client_id,
  };
}

export function event(raw: Raw): TidingsEvent | undefined {
  switch (raw.type) {
    case "state": {
      const s = state(raw.new);
      return { type: "state", ...s, previous: raw.old?.state, reason: raw.reason };
    }
    case "subscription": {
      const name = raw.state.state as SubscriptionStateName;
      const e: TidingsEvent = { type: "subscription", channel: raw.channel, state: name };
      if (raw.state.error) e.error = toError(raw.state.error);
      return e;
    }
    case "subscribed":
      return {
        type: "subscribed",
        channel: raw.channel,
        recovered: raw.recovered,
        needsReload: raw.needs_reload,
      };
    case "publication": {
      const p = raw as Publication & { type: "publication" };
      return p;
    }
    case "message":
      return { type: "message", msgId: raw.msg_id, channel: raw.channel, status: status(raw.status) };
    case "error":
      return { type: "error", error: toError(raw.error) };
    case "store_warning":
      return { type: "storeWarning", message: raw.message };
    default:
      return undefined;
  }
}

/** `createClient` options → the core's `Options` (snake_case JSON). */
export function coreOptions(o: Raw): Raw {
  const out: Raw = { url: o.url };
  const map: Record<string, string> = {
    token: "token",
    user: "user",
    clientName: "client_name",
    clientVersion: "client_version",
    connectTimeoutMs: "connect_timeout_ms",
    commandTimeoutMs: "command_timeout_ms",
    pingIntervalMs: "ping_interval_ms",
    heartbeatGraceMs: "heartbeat_grace_ms",
    livenessTimeoutMs: "liveness_timeout_ms",
    clockJumpMs: "clock_jump_ms",
    tokenRefreshMarginMs: "token_refresh_margin_ms",
    maxFrameBytes: "max_frame_bytes",
    maxChannels: "max_channels",
  };
  for (const [k, v] of Object.entries(map)) if (o[k] !== undefined) out[v] = o[k];
  if (o.reconnect) {
    const r = o.reconnect;
    out.reconnect = {};
    if (r.baseDelayMs !== undefined) out.reconnect.base_delay_ms = r.baseDelayMs;
    if (r.maxDelayMs !== undefined) out.reconnect.max_delay_ms = r.maxDelayMs;
    if (r.factor !== undefined) out.reconnect.factor = r.factor;
    if (r.maxAttempts !== undefined) out.reconnect.max_attempts = r.maxAttempts;
    if (r.resetAfterMs !== undefined) out.reconnect.reset_after_ms = r.resetAfterMs;
  }
  if (o.outbox) {
    const b = o.outbox;
    out.outbox = {};
    if (b.maxMessages !== undefined) out.outbox.max_messages = b.maxMessages;
    if (b.ttlMs !== undefined) out.outbox.ttl_ms = b.ttlMs;
    if (b.fullPolicy !== undefined) out.outbox.full_policy = b.fullPolicy;
    if (b.maxInFlight !== undefined) out.outbox.max_in_flight = b.maxInFlight;
  }
  return out;
}

/** The `sub` claim of a JWT (not verified), for the storage namespace. */
export function tokenSubject(token: string | undefined): string | undefined {
  if (!token) return undefined;
  try {
    const part = token.split(".")[1];
    if (!part) return undefined;
    const json = atob(part.replace(/-/g, "+").replace(/_/g, "/"));
    const sub = JSON.parse(json).sub;
    return typeof sub === "string" ? sub : undefined;
  } catch {
    return undefined;
  }
}
