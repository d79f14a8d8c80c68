// Idiomatic Kotlin over the UniFFI-generated bindings (same package, generated into
// target/generated-sources/uniffi): Flows over the listener traits, a lambda token
// provider, and `code` / `detail` on every TidingsException. The generated async
// functions are already `suspend fun`s.
package dev.tidings

import kotlinx.coroutines.channels.SendChannel
import kotlinx.coroutines.channels.awaitClose
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.buffer
import kotlinx.coroutines.flow.callbackFlow
import kotlinx.coroutines.flow.consumeAsFlow
import kotlinx.coroutines.flow.distinctUntilChanged
import kotlinx.coroutines.flow.onCompletion
import kotlinx.coroutines.channels.Channel as CoroutineChannel

/** The stable code of any Tidings error (`unauthorized`, `outbox_full`, `closed`, ...). */
val TidingsException.code: String
    get() = when (this) {
        is TidingsException.InvalidArgument -> code
        is TidingsException.Outbox -> code
        is TidingsException.Auth -> code
        is TidingsException.Connection -> code
        is TidingsException.Server -> code
        is TidingsException.Store -> code
    }

/** The human-readable detail of any Tidings error. */
val TidingsException.detail: String
    get() = when (this) {
        is TidingsException.InvalidArgument -> detail
        is TidingsException.Outbox -> detail
        is TidingsException.Auth -> detail
        is TidingsException.Connection -> detail
        is TidingsException.Server -> detail
        is TidingsException.Store -> detail
    }

/**
 * Creates a client. [tokenProvider], when given, is called to fetch a fresh token
 * (before connecting without a valid one, before expiry, after `token_expired`).
 */
fun tidingsClient(
    url: String,
    token: String? = null,
    databasePath: String? = null,
    caPem: String? = null,
    optionsJson: String? = null,
    tokenProvider: (suspend () -> String)? = null,
): TidingsClient = TidingsClient(
    ClientConfig(
        url = url,
        token = token,
        databasePath = databasePath,
        caPem = caPem,
        optionsJson = optionsJson,
    ),
    tokenProvider?.let { fetch ->
        object : TokenProvider {
            override suspend fun fetchToken(): String = fetch()
        }
    },
)

/** One connection state change. */
data class StateChange(val old: ConnectionState, val new: ConnectionState, val reason: String)

/** An error not tied to a call (server error frame, refused subscription, token, store). */
data class TidingsEventError(val code: String, val message: String)

/** A queued message's new status. */
data class MessageUpdate(val msgId: String, val channel: String, val status: MessageStatus)

/** A subscription became live ([Channel.subscribedEvents]). */
data class Subscribed(val recovered: Boolean, val needsReload: Boolean)

private open class ClientCallbacks : ClientListener {
    override fun onStateChanged(old: ConnectionState, new: ConnectionState, reason: String) {}
    override fun onError(code: String, message: String) {}
    override fun onMessageStatus(msgId: String, channel: String, status: MessageStatus) {}
}

/**
 * The connection state: the current one first, then every change (collect it in a
 * lifecycle-aware scope to drive a "Live / Reconnecting…" banner).
 */
fun TidingsClient.stateFlow(): Flow<ConnectionState> = callbackFlow {
    val lock = Any()
    var changed = false
    val handle = addListener(object : ClientCallbacks() {
        override fun onStateChanged(old: ConnectionState, new: ConnectionState, reason: String) {
            synchronized(lock) {
                changed = true
                trySend(new)
            }
        }
    })
    // The current state, unless a change already arrived (it is newer).
    synchronized(lock) {
        if (!changed) trySend(state())
    }
    awaitClose { handle.cancel() }
}.buffer(CoroutineChannel.UNLIMITED).distinctUntilChanged()

/**
 * Every state change with its old state and reason (`transport_closed`, `online`, ...),
 * from the moment of this call.
 */
fun TidingsClient.stateChanges(): Flow<StateChange> = listenerFlow { queue ->
    addListener(object : ClientCallbacks() {
        override fun onStateChanged(old: ConnectionState, new: ConnectionState, reason: String) {
            queue.trySend(StateChange(old, new, reason))
        }
    })
}

/** Errors not tied to a call, from the moment of this call. */
fun TidingsClient.errors(): Flow<TidingsEventError> = listenerFlow { queue ->
    addListener(object : ClientCallbacks() {
        override fun onError(code: String, message: String) {
            queue.trySend(TidingsEventError(code, message))
        }
    })
}

/**
 * Status changes of queued messages (queued → sent → acked / failed), for an outbox UI,
 * from the moment of this call.
 */
fun TidingsClient.messageUpdates(): Flow<MessageUpdate> = listenerFlow { queue ->
    addListener(object : ClientCallbacks() {
        override fun onMessageStatus(msgId: String, channel: String, status: MessageStatus) {
            queue.trySend(MessageUpdate(msgId, channel, status))
        }
    })
}

/**
 * A flow fed by a listener registered now, not when collection starts: a coroutine started
 * with `async { flow.collect ... }` may begin collecting only after the next suspension,
 * when publications can already have arrived. Collect it once; the end of the collection
 * removes the listener (so does shutting the client down).
 */
private fun <T> listenerFlow(register: (SendChannel<T>) -> ListenerHandle): Flow<T> {
    val queue = CoroutineChannel<T>(CoroutineChannel.UNLIMITED)
    val handle = register(queue)
    return queue.consumeAsFlow().onCompletion { handle.cancel() }
}

/**
 * This channel's publications (every channel matching it, for a pattern), in order and
 * exactly once, from the moment of this call: call it before `subscribe()` to also get the
 * messages recovered on (re)subscribe. Nothing is dropped: the buffer is unbounded, so
 * collect on a dispatcher that keeps up.
 */
fun Channel.publications(): Flow<Publication> = listenerFlow { queue ->
    addListener(object : ChannelListener {
        override fun onPublications(batch: List<Publication>) {
            for (publication in batch) queue.trySend(publication)
        }

        override fun onSubscribed(recovered: Boolean, needsReload: Boolean) {}
    })
}

/**
 * Each time the subscription becomes live, from the moment of this call; `needsReload`
 * means messages may have been missed (history gone): reload the channel's state from
 * your back end.
 */
fun Channel.subscribedEvents(): Flow<Subscribed> = listenerFlow { queue ->
    addListener(object : ChannelListener {
        override fun onPublications(batch: List<Publication>) {}
        override fun onSubscribed(recovered: Boolean, needsReload: Boolean) {
            queue.trySend(Subscribed(recovered, needsReload))
        }
    })
}
