// The `tidings` npm package: real-time channels for web apps on the Tidings core
// (WebAssembly), with an IndexedDB offline queue and one socket for all tabs.
export { createClient } from "./client.js";
export { TidingsError } from "./errors.js";
export type { ErrorCode } from "./errors.js";
export { createTestClient, createTestServer, TestServer } from "./testing.js";
export type { TestClient } from "./testing.js";
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
