// Mirrors sdk-mobile/kotlin/src/test/kotlin/dev/tidings/TidingsTest.kt against a real
// server-reference process (path in the TIDINGS_SERVER environment variable). Runs on
// macOS with `swift test` (Process is not available on iOS).
//
// NOT RUN in this repository's CI: there is no Swift toolchain there. See Package.swift.

#if os(macOS)
import CryptoKit
import Darwin
import Foundation
import XCTest
@testable import Tidings

private let secret = "swift-test-secret"
private let apiKey = "swift-test-api-key"

/// A real server-reference process on a free port (or, for a restart, a given one).
final class ServerProcess {
    let process: Process
    let port: Int
    var wsURL: String { "ws://127.0.0.1:\(port)/ws" }
    var httpURL: String { "http://127.0.0.1:\(port)" }

    private init(process: Process, port: Int) {
        self.process = process
        self.port = port
    }

    /// Starts the server; with `port` (a restart) retries the bind for a few seconds.
    static func start(dataDir: URL? = nil, port: Int = 0) throws -> ServerProcess {
        guard let binary = ProcessInfo.processInfo.environment["TIDINGS_SERVER"] else {
            throw XCTSkip("set TIDINGS_SERVER to the server-reference binary")
        }
        let deadline = Date().addingTimeInterval(10)
        while true {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: binary)
            var args = ["--bind", "127.0.0.1:\(port)", "--jwt-secret", secret, "--api-key", apiKey]
            if let dataDir { args += ["--data-dir", dataDir.path] }
            process.arguments = args
            process.environment = ["RUST_LOG": "warn"]
            let stdout = Pipe()
            process.standardOutput = stdout
            process.standardError = FileHandle.nullDevice
            try process.run()
            let handle = stdout.fileHandleForReading
            var line = Data()
            while let byte = try handle.read(upToCount: 1), !byte.isEmpty, byte != Data([0x0A]) {
                line.append(byte)
            }
            let text = String(decoding: line, as: UTF8.self)
            if let range = text.range(of: "listening on http://127.0.0.1:"),
               let bound = Int(text[range.upperBound...]) {
                // Keep draining so the server never blocks on a full pipe.
                handle.readabilityHandler = { h in _ = h.availableData }
                return ServerProcess(process: process, port: bound)
            }
            process.terminate()
            process.waitUntilExit()
            if port == 0 || Date() > deadline {
                throw NSError(domain: "server-reference did not start: \(text)", code: 1)
            }
            Thread.sleep(forTimeInterval: 0.1)
        }
    }

    /// Hard kill, like a crash.
    func kill() {
        if process.isRunning {
            Darwin.kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }
}

func base64url(_ data: Data) -> String {
    data.base64EncodedString()
        .replacingOccurrences(of: "+", with: "-")
        .replacingOccurrences(of: "/", with: "_")
        .replacingOccurrences(of: "=", with: "")
}

/// An HS256 JWT, as an app's back end would mint it.
func token(_ user: String) -> String {
    let header = base64url(Data(#"{"alg":"HS256","typ":"JWT"}"#.utf8))
    let exp = Int(Date().timeIntervalSince1970) + 3600
    let claims = #"{"sub":"\#(user)","exp":\#(exp),"channels":["*"],"publish":["*"]}"#
    let payload = base64url(Data(claims.utf8))
    let key = SymmetricKey(data: Data(secret.utf8))
    let mac = HMAC<SHA256>.authenticationCode(for: Data("\(header).\(payload)".utf8), using: key)
    return "\(header).\(payload).\(base64url(Data(mac)))"
}

/// `POST /api/publish` from the app's back end.
func backendPublish(_ server: ServerProcess, channel: String, event: String, dataJson: String) async throws {
    var request = URLRequest(url: URL(string: "\(server.httpURL)/api/publish")!)
    request.httpMethod = "POST"
    request.setValue("Bearer \(apiKey)", forHTTPHeaderField: "Authorization")
    request.setValue("application/json", forHTTPHeaderField: "Content-Type")
    request.httpBody = Data(#"{"channel":"\#(channel)","event":"\#(event)","data":\#(dataJson)}"#.utf8)
    let (_, response) = try await URLSession.shared.data(for: request)
    XCTAssertEqual((response as? HTTPURLResponse)?.statusCode, 200)
}

func eventually(_ what: String, timeout: TimeInterval = 20, _ condition: () async throws -> Bool) async throws {
    let deadline = Date().addingTimeInterval(timeout)
    while try await !condition() {
        if Date() > deadline { XCTFail("timed out waiting for: \(what)"); return }
        try await Task.sleep(nanoseconds: 20_000_000)
    }
}

/// Collects a stream's elements in the background.
final class Collector<Element: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [Element] = []
    private var task: Task<Void, Never>?

    init(_ stream: AsyncStream<Element>) {
        task = Task { [weak self] in
            for await item in stream {
                guard let self else { return }
                self.lock.lock()
                self.items.append(item)
                self.lock.unlock()
            }
        }
    }

    var all: [Element] {
        lock.lock()
        defer { lock.unlock() }
        return items
    }

    func cancel() { task?.cancel() }
}

func numbers(_ publications: [Publication]) -> [Int] {
    publications.compactMap { p in
        guard let object = try? JSONSerialization.jsonObject(with: Data(p.data.utf8)) as? [String: Any] else { return nil }
        return object["n"] as? Int
    }
}

final class TidingsTests: XCTestCase {
    var tmp: URL!

    override func setUpWithError() throws {
        tmp = FileManager.default.temporaryDirectory.appendingPathComponent(UUID().uuidString)
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: tmp)
    }

    /// The README's Swift quickstart is this test.
    func testConnectSubscribeAndReceiveFromTheHttpPublishApi() async throws {
        let server = try ServerProcess.start()
        defer { server.kill() }
        let url = server.wsURL
        let databasePath = tmp.appendingPathComponent("tidings.db").path

        // --- quickstart ---
        let david = try TidingsClient(url: url, token: token("david"), databasePath: databasePath)
        try await david.connect()
        let recognitions = david.channel(name: "recognitions")
        var incoming = recognitions.publications().makeAsyncIterator()
        try await recognitions.subscribe()

        // Another user publishes from their app (returns once the server acked it) ...
        let emily = try TidingsClient(url: url, token: token("emily"))
        try await emily.connect()
        let ack = try await emily.channel(name: "recognitions")
            .publish(event: "recognition.created", data: #"{"to":"david","text":"Great demo!"}"#)
        // ... and the app's back end through the HTTP publish API.
        try await backendPublish(server, channel: "recognitions", event: "recognition.created",
                                 dataJson: #"{"to":"david","n":1}"#)

        let fromEmily = await incoming.next()
        let fromBackend = await incoming.next()
        XCTAssertEqual(fromEmily?.event, "recognition.created")
        XCTAssertEqual(fromEmily?.offset, ack.offset)
        XCTAssertEqual(fromBackend?.publisher, "server")
        // --- end quickstart ---

        XCTAssertEqual(fromEmily?.publisher, "emily")
        XCTAssertEqual(david.state(), .connected)
        let stats = try await emily.stats()
        XCTAssertEqual(stats.messagesAcked, 1)

        do {
            _ = try await emily.publish(channel: "recognitions", event: "x", data: "{not json")
            XCTFail("invalid JSON must throw")
        } catch let error as TidingsError {
            XCTAssertEqual(error.code, "invalid_json")
        }
        await david.close()
        await emily.close()
        do {
            try await david.connect()
            XCTFail("a closed client must throw")
        } catch let error as TidingsError {
            XCTAssertEqual(error.code, "closed")
        }
    }

    func testPublishWhileTheServerIsDownIsDeliveredExactlyOnceAfterItRestarts() async throws {
        let dataDir = tmp.appendingPathComponent("server-data")
        var server = try ServerProcess.start(dataDir: dataDir)
        defer { server.kill() }

        let reader = try TidingsClient(url: server.wsURL, token: token("reader"))
        let posts = reader.channel(name: "posts")
        let received = Collector(posts.publications())
        try await reader.connect()
        try await posts.subscribe()

        let writer = try TidingsClient(url: server.wsURL, token: token("writer"),
                                       databasePath: tmp.appendingPathComponent("writer.db").path)
        let states = Collector(writer.stateStream())
        try await writer.connect()
        try await eventually("state stream sees Connected") { states.all.last == .connected }

        let port = server.port
        server.kill()
        try await eventually("writer notices the crash") { writer.state() != .connected }
        var ids: [String] = []
        for n in 0..<3 {
            ids.append(try await writer.publishQueued(channel: "posts", event: "post.created", data: #"{"n":\#(n)}"#))
        }
        let outbox = try await writer.outbox()
        XCTAssertEqual(outbox.map(\.msgId), ids)
        XCTAssertTrue(outbox.allSatisfy { $0.status == .queued })

        server = try ServerProcess.start(dataDir: dataDir, port: port)
        try await eventually("3 delivered") { received.all.count >= 3 }
        try await Task.sleep(nanoseconds: 500_000_000)
        XCTAssertEqual(numbers(received.all), [0, 1, 2])
        try await eventually("outbox drained") { try await writer.outbox().isEmpty }

        // Live → Reconnecting → Live.
        try await eventually("back to Connected") { states.all.last == .connected }
        let all = states.all
        guard let reconnecting = all.firstIndex(where: { if case .reconnecting = $0 { return true } else { return false } }) else {
            return XCTFail("no Reconnecting in \(all)")
        }
        XCTAssertTrue(all[reconnecting...].contains(.connected))
        received.cancel()
        states.cancel()
        await reader.close()
        await writer.close()
    }

    func testAnAppRestartResendsItsStoredOutbox() async throws {
        let server = try ServerProcess.start()
        defer { server.kill() }
        let db = tmp.appendingPathComponent("app.db").path
        let reader = try TidingsClient(url: server.wsURL, token: token("reader"))
        let notes = reader.channel(name: "notes")
        let received = Collector(notes.publications())
        try await reader.connect()
        try await notes.subscribe()

        var first: TidingsClient? = try TidingsClient(url: server.wsURL, token: token("writer"), databasePath: db)
        let id = try await first!.publishQueued(channel: "notes", event: "note.added", data: #"{"n":7}"#)
        await first!.close()
        first = nil

        let second = try TidingsClient(url: server.wsURL, token: token("writer"), databasePath: db)
        let stored = try await second.outbox()
        XCTAssertEqual(stored.map(\.msgId), [id])
        try await second.connect()
        try await eventually("delivered") { received.all.count >= 1 }
        try await eventually("acked and removed") { try await second.outbox().isEmpty }
        try await Task.sleep(nanoseconds: 300_000_000)
        XCTAssertEqual(numbers(received.all), [7])
        received.cancel()
        await reader.close()
        await second.close()
    }

    func testNetworkChangesPauseAndResumeReconnecting() async throws {
        var server = try ServerProcess.start()
        defer { server.kill() }
        let app = try TidingsClient(url: server.wsURL, token: token("david"))
        let changes = Collector(app.stateChanges())
        try await app.connect()

        app.onBackground()
        app.onForeground()
        try await Task.sleep(nanoseconds: 300_000_000)
        XCTAssertEqual(app.state(), .connected)

        app.onNetworkChanged(online: false)
        let port = server.port
        server.kill()
        try await eventually("waiting for the network") {
            if case .reconnecting(_, nil) = app.state() { return true } else { return false }
        }
        server = try ServerProcess.start(port: port)
        try await Task.sleep(nanoseconds: 1_500_000_000)
        if case .reconnecting = app.state() {} else { XCTFail("no retry while offline") }

        app.onNetworkChanged(online: true)
        try await eventually("reconnected", timeout: 5) { app.state() == .connected }
        try await eventually("the listener saw it all", timeout: 2) { changes.all.last?.new == .connected }
        XCTAssertTrue(changes.all.contains { if case .reconnecting(_, nil) = $0.new { return true } else { return false } })
        changes.cancel()
        await app.close()
    }

    func testARevokedTokenFailsWithItsCode() async throws {
        let server = try ServerProcess.start()
        defer { server.kill() }
        let app = try TidingsClient(url: server.wsURL, token: "not-a-jwt")
        do {
            try await app.connect()
            XCTFail("a bad token must not connect")
        } catch let error as TidingsError {
            XCTAssertEqual(error.code, "unauthorized")
        }
        if case .failed = app.state() {} else { XCTFail("expected Failed, got \(app.state())") }
        await app.close()
    }

    func testATokenProviderClosureIsCalled() async throws {
        let server = try ServerProcess.start()
        defer { server.kill() }
        let calls = LockedCounter()
        let app = try TidingsClient(url: server.wsURL) {
            calls.increment()
            return token("frank")
        }
        try await app.connect()
        XCTAssertGreaterThanOrEqual(calls.value, 1)
        let ack = try await app.channel(name: "chat").publish(event: "msg", data: #""hi""#)
        XCTAssertFalse(ack.msgId.isEmpty)
        await app.close()
    }
}

final class LockedCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func increment() { lock.lock(); count += 1; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return count }
}
#endif
