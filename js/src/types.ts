import type { TidingsError } from "./errors.js";

/** Connection state names. */
export type StateName = "disconnected" | "connecting" | "connected" | "reconnecting" | "failed";

/** The connection state with its details. */
export interface ConnectionState {
  state: StateName;
  /** `reconnecting`: the attempt number (1-based) of the next try. */
  attempt?: number;
  /** `reconnecting`: when the next try starts, in ms from the change; `null` while offline. */
  retryInMs?: number | null;
  /** `failed`: `gave_up`, `unauthorized`, `token_expired`, `unsupported_version`, `server_refused`. */
  code?: string;
  /** `failed`: what happened. */
  message?: string;
}

/** A state change, as passed to `client.on('state', fn)`. */
export interface StateChange extends ConnectionState {
  /** The state before. */
  previous: StateName;
  /** Stable code of the cause: `connect_called`, `transport_closed`, `heartbeat_timeout`, `online`, ... */
  reason: string;
}

/** Who published a message. */
export interface Publisher {
  /** User id (the token's `sub`), or `"server"` for the HTTP publish API. */
  user: string;
  /** The publishing connection's id. */
  client?: string;
  /** Public user info from the token's `info` claim. */
  info?: unknown;
}

/** A message in a channel, delivered once per `(channel, offset)`. */
export interface Publication<T = unknown> {
  channel: string;
  /** The channel's stream epoch. */
  epoch: string;
  /** Offset in the channel's stream (increasing by one). */
  offset: number;
  /** The publisher's message id. */
  id: string;
  /** Application event name, e.g. `post.created`. */
  event: string;
  data: T;
  /** Server time of acceptance, ms since the Unix epoch. */
  ts: number;
  publisher: Publisher;
}

/** Where a queued publish stands. */
export type MessageStatus =
  | { status: "persisting" }
  | { status: "queued" }
  | { status: "sent" }
  | { status: "acked"; epoch: string; offset: number }
  | { status: "failed"; error: TidingsError };

/** A message in the outbox (not yet acked or failed). */
export interface PendingMessage {
  msgId: string;
  channel: string;
  event: string;
  data: unknown;
  /** When it was published (wall ms). */
  createdAtMs: number;
  /** The user that queued it. */
  user?: string | null;
  status: MessageStatus;
}

/** A status change of a queued publish, as passed to `client.on('message', fn)`. */
export interface MessageUpdate {
  msgId: string;
  channel: string;
  status: MessageStatus;
}

/** The server's acknowledgement of a publish. */
export interface Ack {
  msgId: string;
  epoch: string;
  offset: number;
}

/** Passed to `on('subscribed', fn)`: a subscription became live. */
export interface SubscribedInfo {
  channel: string;
  /** Everything missed since the last position was replayed. */
  recovered: boolean;
  /** A position existed but could not be recovered: reload the channel's state. */
  needsReload: boolean;
}

/** Subscription state names. */
export type SubscriptionStateName = "unsubscribed" | "subscribing" | "subscribed" | "failed";

/** Counters and gauges. */
export interface Stats {
  state: StateName;
  rttMs: number | null;
  reconnects: number;
  queueDepth: number;
  subscriptions: number;
  recoveriesSucceeded: number;
  recoveriesFailed: number;
  publicationsDelivered: number;
  duplicatesDropped: number;
  messagesAcked: number;
  clientId: string | null;
  /** Id of the server session (changes when the server restarts). */
  sessionId: string | null;
}

/** One event of a batch (`client.on('batch', fn)`), in order. */
export type TidingsEvent =
  | ({ type: "state" } & StateChange)
  | { type: "subscription"; channel: string; state: SubscriptionStateName; error?: TidingsError }
  | ({ type: "subscribed" } & SubscribedInfo)
  | ({ type: "publication" } & Publication)
  | ({ type: "message" } & MessageUpdate)
  | { type: "error"; error: TidingsError }
  | { type: "storeWarning"; message: string };

/** Reconnect backoff: delay before attempt n is uniform in [0, min(max, base * factor^(n-1))]. */
export interface ReconnectOptions {
  /** Backoff ceiling of the first attempt (1000 ms). */
  baseDelayMs?: number;
  /** Largest backoff ceiling (30000 ms). */
  maxDelayMs?: number;
  /** Ceiling growth per attempt (2). */
  factor?: number;
  /** Attempts before `failed { gave_up }` (10; `null`: never give up). */
  maxAttempts?: number | null;
  /** A connection up this long resets the attempt count (5000 ms). */
  resetAfterMs?: number;
}

/** The offline send queue. */
export interface OutboxOptions {
  /** Most messages kept (1000). */
  maxMessages?: number;
  /** A message not acked within this fails with `expired` (24 h). */
  ttlMs?: number;
  /** When full: `reject_new` (default) or `drop_oldest`. */
  fullPolicy?: "reject_new" | "drop_oldest";
  /** Most publishes awaiting an ack at once (16). */
  maxInFlight?: number;
}

/** Options of `createClient`. Every field but `url` and a token source has a default. */
export interface ClientOptions {
  /** WebSocket URL of the server, e.g. `wss://rt.example.com/ws`. */
  url: string;
  /** A fixed token (JWT). */
  token?: string;
  /** Fetches a token: called before connecting without a valid one, before expiry, and
   * once after `token_expired`. */
  getToken?: () => string | Promise<string>;
  /** User id for the storage namespace (defaults to the token's `sub`). */
  user?: string;
  /** One WebSocket for all tabs of this origin and user (default `true`). */
  shareConnection?: boolean;
  /** Where the offline queue and positions live: `indexeddb` (default) or `memory`. */
  storage?: "indexeddb" | "memory";
  /** Connect at once (default `true`); otherwise call `connect()`. */
  autoConnect?: boolean;
  /** Listen to `online`/`offline`, visibility, `pagehide`/`pageshow`, `freeze`/`resume` (default `true`). */
  lifecycle?: boolean;
  /** Where to load the WebAssembly module from (default: next to the package's JS). */
  wasm?: string | URL | Request | Response | BufferSource | WebAssembly.Module;
  /** How event batches reach listeners: once per animation frame (default) or right after each input. */
  delivery?: "frame" | "immediate";
  /** Client name and version sent at connect. */
  clientName?: string;
  clientVersion?: string;
  reconnect?: ReconnectOptions;
  /** Socket + handshake deadline (10000 ms). */
  connectTimeoutMs?: number;
  /** Reply deadline of every command (10000 ms). */
  commandTimeoutMs?: number;
  /** Ping interval assumed until the server announces its own (30000 ms). */
  pingIntervalMs?: number;
  /** Extra silence before the link counts as dead (5000 ms). */
  heartbeatGraceMs?: number;
  /** Answer deadline of a liveness ping on online/resume (3000 ms). */
  livenessTimeoutMs?: number;
  /** Late-timer / clock-jump threshold (2000 ms). */
  clockJumpMs?: number;
  /** Refresh the token this long before it expires (30000 ms). */
  tokenRefreshMarginMs?: number;
  /** Frame limit assumed until the server announces its own (65536). */
  maxFrameBytes?: number;
  /** Most subscriptions (256). */
  maxChannels?: number;
  outbox?: OutboxOptions;
}

/** Unsubscribes a listener. */
export type Unsubscribe = () => void;

/** Events of a client and their listener arguments. */
export interface ClientEvents {
  state: (change: StateChange) => void;
  error: (error: TidingsError) => void;
  publication: (publication: Publication) => void;
  message: (update: MessageUpdate) => void;
  subscribed: (info: SubscribedInfo) => void;
  storeWarning: (message: string) => void;
  /** This tab became (true) or stopped being (false) the one holding the shared socket. */
  leader: (isLeader: boolean) => void;
  /** Every event of one flush, in order. */
  batch: (events: TidingsEvent[]) => void;
}

/** Events of a channel and their listener arguments. */
export interface ChannelEvents {
  publication: (publication: Publication) => void;
  subscribed: (info: SubscribedInfo) => void;
  state: (state: SubscriptionStateName, error?: TidingsError) => void;
}

/** A channel (or a pattern ending in `*`). */
export interface Channel extends AsyncIterable<Publication[]> {
  readonly name: string;
  /** This tab's subscription state. */
  readonly state: SubscriptionStateName;
  /** Subscribes; resolves once live (offline, waits for the connection). */
  subscribe(): Promise<void>;
  /** Stops receiving this channel in this tab. */
  unsubscribe(): Promise<void>;
  /** Publishes; resolves with the server's ack. Queued (in IndexedDB) while offline. */
  publish<T = unknown>(event: string, data: T): Promise<Ack>;
  on<K extends keyof ChannelEvents>(event: K, listener: ChannelEvents[K]): Unsubscribe;
}

/** A Tidings client. */
export interface TidingsClient {
  /** Current connection state name. */
  readonly state: StateName;
  /** Current connection state with details. */
  readonly connection: ConnectionState;
  /** True while this tab holds the shared socket (always true with `shareConnection: false`). */
  readonly isLeader: boolean;
  /** Resolves once the client is set up (its store loaded, or its tab group joined). */
  readonly ready: Promise<void>;
  on<K extends keyof ClientEvents>(event: K, listener: ClientEvents[K]): Unsubscribe;
  /** Connects; resolves once connected, rejects once failed. */
  connect(): Promise<void>;
  /** Closes the connection (kept subscriptions and queue resume on `connect()`). With a
   * shared connection this tab stops receiving, and the socket closes once no tab wants it. */
  disconnect(): void;
  /** A channel handle (the same object for the same name). */
  channel(name: string): Channel;
  /** Publishes into a channel; resolves with the server's ack. */
  publish<T = unknown>(channel: string, event: string, data: T): Promise<Ack>;
  /** Messages not yet acked or failed, oldest first. */
  outbox(): Promise<PendingMessage[]>;
  /** Cancels a message not sent yet. */
  cancel(msgId: string): Promise<void>;
  /** Counters and gauges. */
  stats(): Promise<Stats>;
  /** Replaces the token (sent on the live connection). */
  setToken(token: string): void;
  /** Log out: disconnect, drop the queue, forget subscriptions and positions, wipe storage. */
  clear(): Promise<void>;
  /** Stops this client for good (leaves the tab group, closes its socket). */
  close(): void;
}
