// Idiomatic Swift over the UniFFI-generated bindings (Tidings.swift): AsyncStreams over
// the listener protocols, a closure token provider, and `code` / `detail` on every
// TidingsError. The generated methods are already `async throws`.
//
// Not compiled in this repository's CI (no Swift toolchain there); see Package.swift.

import Foundation

extension TidingsError {
    /// The stable code of any variant (`unauthorized`, `outbox_full`, `closed`, ...).
    public var code: String {
        switch self {
        case let .InvalidArgument(code, _),
             let .Outbox(code, _),
             let .Auth(code, _),
             let .Connection(code, _),
             let .Store(code, _):
            return code
        case let .Server(code, _, _, _):
            return code
        }
    }

    /// The human-readable detail of any variant.
    public var detail: String {
        switch self {
        case let .InvalidArgument(_, detail),
             let .Outbox(_, detail),
             let .Auth(_, detail),
             let .Connection(_, detail),
             let .Store(_, detail):
            return detail
        case let .Server(_, detail, _, _):
            return detail
        }
    }
}

/// A `TokenProvider` from an async closure.
public final class ClosureTokenProvider: TokenProvider, @unchecked Sendable {
    private let fetch: @Sendable () async throws -> String

    public init(_ fetch: @escaping @Sendable () async throws -> String) {
        self.fetch = fetch
    }

    public func fetchToken() async throws -> String {
        try await fetch()
    }
}

extension TidingsClient {
    /// Creates a client. `tokenProvider`, when given, is called to fetch a fresh token
    /// (before connecting without a valid one, before expiry, after `token_expired`).
    public convenience init(
        url: String,
        token: String? = nil,
        databasePath: String? = nil,
        caPem: String? = nil,
        optionsJson: String? = nil,
        tokenProvider: (@Sendable () async throws -> String)? = nil
    ) throws {
        try self.init(
            config: ClientConfig(
                url: url,
                token: token,
                user: nil,
                databasePath: databasePath,
                caPem: caPem,
                optionsJson: optionsJson
            ),
            tokenProvider: tokenProvider.map { ClosureTokenProvider($0) }
        )
    }
}

/// One connection state change.
public struct StateChange: Sendable, Equatable {
    public let old: ConnectionState
    public let new: ConnectionState
    public let reason: String
}

/// A queued message's new status.
public struct MessageUpdate: Sendable, Equatable {
    public let msgId: String
    public let channel: String
    public let status: MessageStatus
}

/// An error not tied to a call (server error frame, refused subscription, token, store).
public struct TidingsEventError: Sendable, Equatable {
    public let code: String
    public let message: String
}

/// Forwards listener callbacks to closures (they run on a Tidings worker thread).
final class ClientCallbacks: ClientListener, @unchecked Sendable {
    var state: (@Sendable (ConnectionState, ConnectionState, String) -> Void)?
    var error: (@Sendable (String, String) -> Void)?
    var message: (@Sendable (String, String, MessageStatus) -> Void)?

    func onStateChanged(old: ConnectionState, new: ConnectionState, reason: String) {
        state?(old, new, reason)
    }

    func onError(code: String, message: String) {
        error?(code, message)
    }

    func onMessageStatus(msgId: String, channel: String, status: MessageStatus) {
        message?(msgId, channel, status)
    }
}

final class ChannelCallbacks: ChannelListener, @unchecked Sendable {
    var publications: (@Sendable ([Publication]) -> Void)?
    var subscribed: (@Sendable (Bool, Bool) -> Void)?

    func onPublications(batch: [Publication]) {
        publications?(batch)
    }

    func onSubscribed(recovered: Bool, needsReload: Bool) {
        subscribed?(recovered, needsReload)
    }
}

/// A Bool behind a lock.
final class LockedFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false

    func withLock(_ body: (inout Bool) -> Void) {
        lock.lock()
        defer { lock.unlock() }
        body(&value)
    }
}

/// Makes an unbounded AsyncStream fed by a listener; the listener is cancelled when the
/// stream's consumer stops.
private func listenerStream<Element>(
    register: (AsyncStream<Element>.Continuation) throws -> ListenerHandle
) -> AsyncStream<Element> {
    AsyncStream(Element.self, bufferingPolicy: .unbounded) { continuation in
        do {
            let handle = try register(continuation)
            continuation.onTermination = { _ in handle.cancel() }
        } catch {
            continuation.finish()
        }
    }
}

extension TidingsClient {
    /// The connection state: the current one first, then every change.
    public func stateStream() -> AsyncStream<ConnectionState> {
        let changed = LockedFlag()
        return listenerStream { continuation in
            let callbacks = ClientCallbacks()
            callbacks.state = { _, new, _ in
                changed.withLock { flag in
                    flag = true
                    continuation.yield(new)
                }
            }
            let handle = try self.addListener(listener: callbacks)
            // The current state, unless a change already arrived (it is newer).
            changed.withLock { flag in
                if !flag { continuation.yield(self.state()) }
            }
            return handle
        }
    }

    /// Every state change with its old state and reason (`transport_closed`, `online`, ...).
    public func stateChanges() -> AsyncStream<StateChange> {
        listenerStream { continuation in
            let callbacks = ClientCallbacks()
            callbacks.state = { old, new, reason in
                continuation.yield(StateChange(old: old, new: new, reason: reason))
            }
            return try self.addListener(listener: callbacks)
        }
    }

    /// Errors not tied to a call.
    public func errors() -> AsyncStream<TidingsEventError> {
        listenerStream { continuation in
            let callbacks = ClientCallbacks()
            callbacks.error = { code, message in
                continuation.yield(TidingsEventError(code: code, message: message))
            }
            return try self.addListener(listener: callbacks)
        }
    }

    /// Status changes of queued messages (queued → sent → acked / failed).
    public func messageUpdates() -> AsyncStream<MessageUpdate> {
        listenerStream { continuation in
            let callbacks = ClientCallbacks()
            callbacks.message = { msgId, channel, status in
                continuation.yield(MessageUpdate(msgId: msgId, channel: channel, status: status))
            }
            return try self.addListener(listener: callbacks)
        }
    }
}

extension Channel {
    /// This channel's publications (every channel matching it, for a pattern), in order
    /// and exactly once, from now on. Create the stream before `subscribe()` to also get
    /// the messages recovered on (re)subscribe. The buffer is unbounded: nothing is dropped.
    public func publications() -> AsyncStream<Publication> {
        listenerStream { continuation in
            let callbacks = ChannelCallbacks()
            callbacks.publications = { batch in
                for publication in batch { continuation.yield(publication) }
            }
            return try self.addListener(listener: callbacks)
        }
    }

    /// Each time the subscription becomes live; `needsReload` means messages may have
    /// been missed: reload the channel's state from your back end.
    public func subscribedEvents() -> AsyncStream<(recovered: Bool, needsReload: Bool)> {
        listenerStream { continuation in
            let callbacks = ChannelCallbacks()
            callbacks.subscribed = { recovered, needsReload in
                continuation.yield((recovered: recovered, needsReload: needsReload))
            }
            return try self.addListener(listener: callbacks)
        }
    }
}
