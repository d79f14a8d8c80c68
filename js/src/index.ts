// The `tidings` npm package: real-time channels for web apps on the Tidings core
// (WebAssembly), with an IndexedDB offline queue and one socket for all tabs.
export { createClient } from "./client.js";
export { TidingsError } from "./errors.js";
export type { ErrorCode } from "./errors.js";
// The in-memory test double lives in `tidings/testing` (kept out of app bundles).
export type {
  Ack,
  Channel,
  ChannelEvents,
  ClientEvents,
  ClientOptions,
  ConnectionState,
  MessageStatus,
  MessageUpdate,
  OutboxOptions,
  PendingMessage,
  Publication,
  Publisher,
  ReconnectOptions,
  StateChange,
  StateName,
  Stats,
  SubscribedInfo,
  SubscriptionStateName,
  TidingsClient,
  TidingsEvent,
  Unsubscribe,
} from "./types.js";
