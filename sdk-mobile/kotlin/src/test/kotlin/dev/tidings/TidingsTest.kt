package dev.tidings

import java.io.BufferedReader
import java.io.File
import java.io.InputStreamReader
import java.net.URI
import java.net.http.HttpClient
import java.net.http.HttpRequest
import java.net.http.HttpResponse
import java.nio.file.Path
import java.util.Base64
import java.util.Collections
import java.util.concurrent.atomic.AtomicInteger
import javax.crypto.Mac
import javax.crypto.spec.SecretKeySpec
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.cancelAndJoin
import kotlinx.coroutines.delay
import kotlinx.coroutines.flow.take
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.io.TempDir

private const val SECRET = "kotlin-test-secret"
private const val API_KEY = "kotlin-test-api-key"

/**
 * A real `server-reference` process (path from `-Dtidings.server`), on a free port or,
 * for a restart, on a given one. Its stdout is drained for as long as it runs.
 */
class ServerProcess private constructor(private val process: Process, val port: Int) {
    val wsUrl get() = "ws://127.0.0.1:$port/ws"
    val httpUrl get() = "http://127.0.0.1:$port"

    /** Hard kill, like a crash (SIGKILL): nothing is flushed or announced. */
    fun kill() {
        process.destroyForcibly()
        process.waitFor()
    }

    companion object {
        private val binary: String
            get() = System.getProperty("tidings.server")
                ?: error("set -Dtidings.server=<path to the server-reference binary>")

        /** Starts the server; with [port] (a restart) retries the bind for a few seconds. */
        fun start(dataDir: Path? = null, port: Int = 0): ServerProcess {
            val deadline = System.nanoTime() + 10_000_000_000L
            while (true) {
                val command = mutableListOf(
                    binary, "--bind", "127.0.0.1:$port",
                    "--jwt-secret", SECRET, "--api-key", API_KEY,
                )
                if (dataDir != null) command += listOf("--data-dir", dataDir.toString())
                val process = ProcessBuilder(command)
                    .redirectError(ProcessBuilder.Redirect.DISCARD)
                    .also { it.environment()["RUST_LOG"] = "warn" }
                    .start()
                val stdout = BufferedReader(InputStreamReader(process.inputStream))
                val first = stdout.readLine()
                val match = first?.let { Regex("listening on http://127\\.0\\.0\\.1:(\\d+)").find(it) }
                if (match != null) {
                    // Keep draining so the server never blocks on a full pipe.
                    Thread {
                        try {
                            while (stdout.readLine() != null) { /* drain */ }
                        } catch (_: Exception) {
                        }
                    }.apply { isDaemon = true }.start()
                    return ServerProcess(process, match.groupValues[1].toInt())
                }
                process.destroyForcibly()
                process.waitFor()
                check(port != 0 && System.nanoTime() < deadline) {
                    "server-reference did not start (first line: $first)"
                }
                Thread.sleep(100)
            }
        }
    }
}

/** Runs [block] with a server and always stops it (the test may restart it). */
fun <T> withServer(dataDir: Path? = null, block: suspend CoroutineScope.(Servers) -> T): T {
    val servers = Servers(ServerProcess.start(dataDir), dataDir)
    try {
        return runBlocking { withTimeout(60_000) { block(servers) } }
    } finally {
        servers.current.kill()
    }
}

class Servers(var current: ServerProcess, private val dataDir: Path?) {
    val wsUrl get() = current.wsUrl

    fun kill() = current.kill()

    /** Starts the server again on the same port with the same data dir. */
    fun restart() {
        current = ServerProcess.start(dataDir, current.port)
    }
}

/** An HS256 JWT, as an app's back end would mint it. */
fun token(user: String): String {
    val b64 = Base64.getUrlEncoder().withoutPadding()
    val header = b64.encodeToString("""{"alg":"HS256","typ":"JWT"}""".toByteArray())
    val exp = System.currentTimeMillis() / 1000 + 3600
    val claims = """{"sub":"$user","exp":$exp,"channels":["*"],"publish":["*"]}"""
    val payload = b64.encodeToString(claims.toByteArray())
    val mac = Mac.getInstance("HmacSHA256").apply { init(SecretKeySpec(SECRET.toByteArray(), "HmacSHA256")) }
    val signature = b64.encodeToString(mac.doFinal("$header.$payload".toByteArray()))
    return "$header.$payload.$signature"
}

/** `POST /api/publish` from the app's back end. */
fun backendPublish(server: ServerProcess, channel: String, event: String, dataJson: String) {
    val request = HttpRequest.newBuilder(URI.create("${server.httpUrl}/api/publish"))
        .header("Authorization", "Bearer $API_KEY")
        .header("Content-Type", "application/json")
        .POST(HttpRequest.BodyPublishers.ofString("""{"channel":"$channel","event":"$event","data":$dataJson}"""))
        .build()
    val response = HttpClient.newHttpClient().send(request, HttpResponse.BodyHandlers.ofString())
    assertEquals(200, response.statusCode(), response.body())
}

suspend fun eventually(what: String, timeoutMs: Long = 20_000, condition: suspend () -> Boolean) {
    val deadline = System.currentTimeMillis() + timeoutMs
    while (!condition()) {
        check(System.currentTimeMillis() < deadline) { "timed out waiting for: $what" }
        delay(20)
    }
}

/** Like `assertThrows`, for suspend calls. */
suspend inline fun <reified T : Throwable> assertThrowsSuspending(block: suspend () -> Unit): T {
    try {
        block()
    } catch (e: Throwable) {
        if (e is T) return e
        throw AssertionError("expected ${T::class.simpleName}, got $e", e)
    }
    throw AssertionError("expected ${T::class.simpleName}, nothing was thrown")
}

private fun numbers(publications: List<Publication>): List<Int> =
    publications.map { Regex("\"n\":(\\d+)").find(it.data)!!.groupValues[1].toInt() }

class TidingsTest {
    @TempDir
    lateinit var tmp: Path

    /** The README's Kotlin quickstart is this test. */
    @Test
    fun connectSubscribeAndReceiveFromTheHttpPublishApi() = withServer { servers ->
        val url = servers.wsUrl
        val databasePath = tmp.resolve("tidings.db").toString()

        // --- quickstart ---
        val david = tidingsClient(url, token = token("david"), databasePath = databasePath)
        david.connect()
        val recognitions = david.channel("recognitions")
        val publications = recognitions.publications() // listening from here on
        val incoming = async { publications.take(2).toList() }
        recognitions.subscribe()

        // Another user publishes from their app (returns once the server acked it) ...
        val emily = tidingsClient(url, token = token("emily"))
        emily.connect()
        val ack = emily.channel("recognitions")
            .publish("recognition.created", """{"to":"david","text":"Great demo!"}""")
        // ... and the app's back end through the HTTP publish API.
        backendPublish(servers.current, "recognitions", "recognition.created", """{"to":"david","n":1}""")

        val (fromEmily, fromBackend) = incoming.await()
        assertEquals("recognition.created", fromEmily.event)
        assertEquals(ack.offset, fromEmily.offset)
        assertEquals("server", fromBackend.publisher)
        // --- end quickstart ---

        assertTrue(fromEmily.data.contains("Great demo!"), fromEmily.data)
        assertEquals("emily", fromEmily.publisher)
        assertEquals(ConnectionState.Connected, david.state())
        assertEquals(1uL, emily.stats().messagesAcked)

        val bad = assertThrowsSuspending<TidingsException> {
            emily.publish("recognitions", "x", "{not json")
        }
        assertEquals("invalid_json", bad.code)
        david.shutdown()
        emily.shutdown()
        val closed = assertThrowsSuspending<TidingsException.Connection> { david.connect() }
        assertEquals("closed", closed.code)
    }

    @Test
    fun publishWhileTheServerIsDownIsDeliveredExactlyOnceAfterItRestarts() =
        withServer(dataDir = tmp.resolve("server-data")) { servers ->
            val reader = tidingsClient(servers.wsUrl, token = token("reader"))
            val received = Collections.synchronizedList(mutableListOf<Publication>())
            val posts = reader.channel("posts")
            val postsFlow = posts.publications()
            val collector = launch(Dispatchers.Default) { postsFlow.collect { received += it } }
            reader.connect()
            posts.subscribe()

            val writer = tidingsClient(
                servers.wsUrl,
                token = token("writer"),
                databasePath = tmp.resolve("writer.db").toString(),
            )
            val states = Collections.synchronizedList(mutableListOf<ConnectionState>())
            val watcher = launch(Dispatchers.Default) { writer.stateFlow().collect { states += it } }
            writer.connect()
            eventually("state flow sees Connected") { states.lastOrNull() == ConnectionState.Connected }

            servers.kill()
            eventually("writer notices the crash") { writer.state() != ConnectionState.Connected }
            val ids = (0 until 3).map { n -> writer.publishQueued("posts", "post.created", """{"n":$n}""") }
            val outbox = writer.outbox()
            assertEquals(ids, outbox.map { it.msgId })
            assertTrue(outbox.all { it.status == MessageStatus.Queued }, outbox.toString())

            servers.restart()
            eventually("3 delivered") { received.size >= 3 }
            delay(500) // anything extra would show up now
            assertEquals(listOf(0, 1, 2), numbers(received.toList()))
            eventually("outbox drained") { writer.outbox().isEmpty() }

            // The flow went Live → Reconnecting → Live.
            eventually("back to Connected") { states.lastOrNull() == ConnectionState.Connected }
            val reconnecting = states.indexOfFirst { it is ConnectionState.Reconnecting }
            assertTrue(reconnecting > 0, states.toString())
            assertTrue(states.subList(reconnecting, states.size).contains(ConnectionState.Connected), states.toString())

            collector.cancelAndJoin()
            watcher.cancelAndJoin()
            reader.shutdown()
            writer.shutdown()
        }

    @Test
    fun anAppRestartResendsItsStoredOutbox() = withServer { servers ->
        val db = tmp.resolve("app.db").toString()
        val reader = tidingsClient(servers.wsUrl, token = token("reader"))
        val received = Collections.synchronizedList(mutableListOf<Publication>())
        val notes = reader.channel("notes")
        val notesFlow = notes.publications()
        val collector = launch(Dispatchers.Default) { notesFlow.collect { received += it } }
        reader.connect()
        notes.subscribe()

        // Queued offline, then the app is killed (the client is freed without sending).
        val first = tidingsClient(servers.wsUrl, token = token("writer"), databasePath = db)
        val id = first.publishQueued("notes", "note.added", """{"n":7}""")
        first.close() // AutoCloseable: frees the client
        assertTrue(File(db).exists())

        val second = tidingsClient(servers.wsUrl, token = token("writer"), databasePath = db)
        assertEquals(listOf(id), second.outbox().map { it.msgId })
        second.connect()
        eventually("delivered") { received.size >= 1 }
        eventually("acked and removed") { second.outbox().isEmpty() }
        delay(300)
        assertEquals(listOf(7), numbers(received.toList()))

        collector.cancelAndJoin()
        reader.shutdown()
        second.shutdown()
    }

    @Test
    fun networkChangesPauseAndResumeReconnecting() = withServer { servers ->
        val app = tidingsClient(servers.wsUrl, token = token("david"))
        val changes = Collections.synchronizedList(mutableListOf<StateChange>())
        val stateChanges = app.stateChanges()
        val watcher = launch(Dispatchers.Default) { stateChanges.collect { changes += it } }
        app.connect()

        app.onBackground()
        app.onForeground()
        delay(300)
        assertEquals(ConnectionState.Connected, app.state())

        app.onNetworkChanged(false)
        servers.kill()
        eventually("waiting for the network") {
            (app.state() as? ConnectionState.Reconnecting)?.retryInMs == null &&
                app.state() is ConnectionState.Reconnecting
        }
        servers.restart()
        delay(1_500)
        assertTrue(app.state() is ConnectionState.Reconnecting, "no retry while offline")

        app.onNetworkChanged(true)
        eventually("reconnected", timeoutMs = 5_000) { app.state() == ConnectionState.Connected }
        // Live → Reconnecting (waiting for the network: no retry time) → Live.
        eventually("the listener saw it all", timeoutMs = 2_000) { changes.lastOrNull()?.new == ConnectionState.Connected }
        // Seen from connect() on (the listener is registered when stateChanges() is called).
        assertTrue(changes.first().new is ConnectionState.Connecting, changes.toString())
        // The link lost while live, then waiting for the network. (The socket's close and
        // the offline report race in the driver: either may come first.)
        val lost = changes.indexOfFirst { it.old == ConnectionState.Connected }
        val waiting = changes.indexOfFirst { (it.new as? ConnectionState.Reconnecting)?.retryInMs == null && it.new is ConnectionState.Reconnecting }
        assertTrue(lost > 0 && waiting >= lost, changes.toString())
        assertTrue(changes[lost].new is ConnectionState.Reconnecting, changes.toString())
        watcher.cancelAndJoin()
        app.shutdown()
    }

    @Test
    fun aRevokedTokenFailsWithItsCode() = withServer { servers ->
        val app = tidingsClient(servers.wsUrl, token = "not-a-jwt")
        val error = assertThrowsSuspending<TidingsException.Auth> { app.connect() }
        assertEquals("unauthorized", error.code)
        assertTrue(app.state() is ConnectionState.Failed)
        app.shutdown()
    }

    @Test
    fun aTokenProviderLambdaIsCalled() = withServer { servers ->
        val calls = AtomicInteger()
        val app = tidingsClient(servers.wsUrl) {
            calls.incrementAndGet()
            token("frank")
        }
        app.connect()
        assertTrue(calls.get() >= 1)
        val ack = app.channel("chat").publish("msg", "\"hi\"")
        assertTrue(ack.msgId.isNotEmpty())
        app.shutdown()
    }
}
