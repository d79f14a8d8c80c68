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

/** snake_case → camelCase. */
const camel = (key: string) => key.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());

export function stats(raw: Raw): Stats {
  return Object.fromEntries(Object.entries(raw).map(([k, v]) => [camel(k), v])) as unknown as Stats;
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

/** `createClient` options that are the wrapper's, not the core's. */
const WRAPPER_OPTIONS = new Set(["getToken", "shareConnection", "storage", "autoConnect", "lifecycle", "wasm", "delivery"]);

/** `createClient` options → the core's `Options` (snake_case JSON; the core ignores
 * names it does not know and checks the values). */
export function coreOptions(o: Raw, top = true): Raw {
  const out: Raw = {};
  for (const [key, value] of Object.entries(o)) {
    if (value === undefined || (top && WRAPPER_OPTIONS.has(key))) continue;
    out[key.replace(/[A-Z]/g, (c) => "_" + c.toLowerCase())] =
      value && typeof value === "object" && !Array.isArray(value) ? coreOptions(value, false) : value;
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
