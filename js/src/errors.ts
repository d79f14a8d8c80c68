/** Stable error codes (see docs/protocol.md and the core's `ClientError::code`). */
export type ErrorCode =
  | "invalid_channel"
  | "publish_to_pattern"
  | "invalid_event"
  | "invalid_message_id"
  | "frame_too_large"
  | "outbox_full"
  | "too_many_channels"
  | "unknown_message"
  | "not_cancellable"
  | "expired"
  | "cancelled"
  | "overflow"
  | "user_mismatch"
  | "token_provider"
  | "connection_failed"
  | "closed"
  | "bad_request"
  | "unauthorized"
  | "token_expired"
  | "forbidden"
  | "rate_limited"
  | "unsupported_version"
  | "too_many_connections"
  | "not_connected"
  | "internal"
  | "shutting_down"
  | "gave_up"
  | "server_refused"
  | "other"
  | (string & {});

/** Every error the SDK reports: an `Error` with a stable `code`. */
export class TidingsError extends Error {
  readonly code: ErrorCode;
  /** Whether trying the same thing later may work. */
  readonly temporary: boolean;
  /** For `rate_limited`: wait this long. */
  readonly retryAfterMs?: number;

  constructor(code: ErrorCode, message: string, temporary = false, retryAfterMs?: number) {
    super(message);
    this.name = "TidingsError";
    this.code = code;
    this.temporary = temporary;
    if (retryAfterMs !== undefined) this.retryAfterMs = retryAfterMs;
  }
}

interface ErrorLike {
  code?: string;
  message?: string;
  temporary?: boolean;
  retry_after_ms?: number;
  retryAfterMs?: number;
}

/** Anything thrown (a wasm error, a serialized error, a plain Error) → `TidingsError`. */
export function toError(value: unknown): TidingsError {
  if (value instanceof TidingsError) return value;
  if (value && typeof value === "object") {
    const e = value as ErrorLike;
    if (typeof e.code === "string") {
      return new TidingsError(
        e.code,
        e.message ?? e.code,
        !!e.temporary,
        e.retryAfterMs ?? e.retry_after_ms,
      );
    }
    if (value instanceof Error) return new TidingsError("other", value.message);
  }
  return new TidingsError("other", String(value));
}

/** A `TidingsError` as plain data (to cross a BroadcastChannel). */
export function errorData(e: TidingsError): ErrorLike {
  return { code: e.code, message: e.message, temporary: e.temporary, retryAfterMs: e.retryAfterMs };
}
