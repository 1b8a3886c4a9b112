// XCTest tests of the Swift bindings against a real reference server process: the same
// scenarios as the Kotlin suite (login and wrong password, 1:1 and group chat, message states,
// an offline send, a server restart, error codes, cancelled subscriptions, a panic inside the
// SDK, the log sink).
import Foundation
import XCTest
@testable import Missive

let password = "correct horse battery"

final class Collector: LogSink, EventListener, @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []
    private(set) var count = 0

    func log(level: LogLevel, target: String, message: String) {
        lock.lock(); lines.append("\(level) \(target) \(message)"); lock.unlock()
    }

    func onEvent(event: ClientEvent) {
        lock.lock(); count += 1; lock.unlock()
    }

    var snapshot: [String] { lock.lock(); defer { lock.unlock() }; return lines }
    var events: Int { lock.lock(); defer { lock.unlock() }; return count }
}

struct Timeout: Error { let what: String }

/// Polls `check` (bounded): no race between reading a state and subscribing to changes.
func eventually<T>(_ what: String, _ check: () async throws -> T?) async throws -> T {
    let deadline = Date().addingTimeInterval(30)
    while Date() < deadline {
        if let value = try await check() { return value }
        try await Task.sleep(nanoseconds: 20_000_000)
    }
    throw Timeout(what: what)
}

func isSentOrBeyond(_ s: MessageState) -> Bool {
    switch s {
    case .sent, .delivered, .read: return true
    default: return false
    }
}

final class MissiveTests: XCTestCase {
    var server: TestServer!
    var clients: [MissiveClient] = []

    override func setUp() async throws {
        server = try TestServer()
    }

    override func tearDown() async throws {
        for c in clients { try? await c.shutdown() }
        clients = []
        server = nil
    }

    func client(store: String? = nil) async throws -> MissiveClient {
        var settings = defaultSettings(serverUrl: server.url)
        settings.storePath = store
        settings.deviceId = "swift"
        settings.backoffBaseMs = 20
        settings.backoffCapMs = 500
        let c = try await MissiveClient.open(settings: settings)
        clients.append(c)
        return c
    }

    func registered(_ name: String, store: String? = nil) async throws -> MissiveClient {
        let c = try await client(store: store)
        try await c.register(username: name, password: password)
        return c
    }

    func awaitState(_ c: MissiveClient, _ id: String, _ pred: @escaping (MessageState) -> Bool) async throws -> Message {
        try await eventually("\(id) state") {
            if let m = try await c.message(messageId: id), pred(m.state) { return m }
            return nil
        }
    }

    func texts(_ c: MissiveClient, _ conversation: String) async throws -> [String] {
        try await c.messages(conversation: conversation, beforeSeq: nil, limit: 500).messages.reversed().map {
            if case let .text(text) = $0.body { return text }
            return "?"
        }
    }

    func testLoginAndWrongPassword() async throws {
        try await registered("alice").shutdown()
        let c = try await client()
        do {
            try await c.login(username: "alice", password: "not my password")
            XCTFail("a wrong password must fail")
        } catch let e as MissiveError {
            XCTAssertEqual(e.code, .authFailed)
            XCTAssertFalse(e.isRetryable)
        }
        if case .authFailed = c.connectionState() {} else { XCTFail("state is \(c.connectionState())") }
        try await c.login(username: "alice", password: password)
        XCTAssertEqual(c.connectionState(), .connected)
    }

    func testOneToOneAndGroupChat() async throws {
        let alice = try await registered("alice")
        let bob = try await registered("bob")
        let dm = try await alice.createDirect(peer: "bob")
        XCTAssertEqual(dm.kind, .direct)
        let hi = try await alice.sendText(conversation: dm.id, text: "hi bob")
        let got = try await eventually("bob's copy") { try await bob.message(messageId: hi.id) }
        XCTAssertEqual(got.sender, "alice")
        let group = try await alice.createGroup(title: "team", members: ["bob"])
        _ = try await eventually("bob learns the group") { try await bob.conversation(id: group.id) }
        let fromBob = try await bob.sendText(conversation: group.id, text: "hello team")
        _ = try await eventually("alice's copy") { try await alice.message(messageId: fromBob.id) }
        let groupTexts = try await texts(alice, group.id)
        XCTAssertEqual(groupTexts, ["hello team"])
    }

    func testLocalEchoSentDeliveredRead() async throws {
        let alice = try await registered("alice")
        let bob = try await registered("bob")
        let dm = try await alice.createDirect(peer: "bob")
        let echo = try await alice.sendText(conversation: dm.id, text: "states")
        XCTAssertEqual(echo.state, .pending)
        _ = try await awaitState(alice, echo.id, isSentOrBeyond)
        _ = try await awaitState(alice, echo.id) { $0 == .delivered || $0 == .read }
        _ = try await eventually("bob's copy") { try await bob.message(messageId: echo.id) }
        try await bob.markRead(conversation: dm.id)
        _ = try await awaitState(alice, echo.id) { $0 == .read }
    }

    func testOfflineSendDeliveredAfterReconnect() async throws {
        let alice = try await registered("alice")
        let bob = try await registered("bob")
        let dm = try await alice.createDirect(peer: "bob")
        try await alice.networkLost()
        let queued = try await alice.sendText(conversation: dm.id, text: "written offline")
        XCTAssertEqual(queued.state, .pending)
        let unsent = try await alice.unsentCount()
        XCTAssertEqual(unsent, 1)
        try await alice.networkAvailable()
        _ = try await awaitState(alice, queued.id, isSentOrBeyond)
        _ = try await eventually("bob's copy") { try await bob.message(messageId: queued.id) }
    }

    func testServerRestartMidConversation() async throws {
        let store = FileManager.default.temporaryDirectory.appendingPathComponent("missive-swift-\(UUID().uuidString).db").path
        let alice = try await registered("alice", store: store)
        let bob = try await registered("bob")
        let dm = try await alice.createDirect(peer: "bob")
        let before = try await alice.sendText(conversation: dm.id, text: "before")
        _ = try await awaitState(alice, before.id, isSentOrBeyond)
        server.stop()
        var during: [Message] = []
        for i in 1...5 { during.append(try await alice.sendText(conversation: dm.id, text: "during \(i)")) }
        try server.start()
        _ = try await awaitState(alice, during.last!.id, isSentOrBeyond)
        _ = try await eventually("bob's copy") { try await bob.message(messageId: during.last!.id) }
        let bobTexts = try await texts(bob, dm.id)
        XCTAssertEqual(bobTexts, ["before"] + (1...5).map { "during \($0)" })
    }

    func testRefusedRequestsCarryStableCodes() async throws {
        let alice = try await registered("alice")
        do {
            _ = try await alice.createDirect(peer: "nobody")
            XCTFail("must be refused")
        } catch let e as MissiveError {
            XCTAssertEqual(e.code, .refused)
            if case let .Failed(_, detail, _) = e { XCTAssertTrue(detail.contains("NOT_FOUND"), detail) }
        }
        do {
            _ = try await alice.sendText(conversation: "424242", text: "into the void")
            XCTFail("must fail")
        } catch let e as MissiveError {
            XCTAssertEqual(e.code, .notFound)
        }
    }

    func testCancelledSubscriptionStops() async throws {
        let alice = try await registered("alice")
        _ = try await registered("bob")
        let dm = try await alice.createDirect(peer: "bob")
        let collector = Collector()
        let subscription = alice.subscribe(listener: collector)
        _ = try await eventually("the current state") { collector.events > 0 ? true : nil }
        subscription.cancel()
        XCTAssertFalse(subscription.isActive())
        let seen = collector.events
        let m = try await alice.sendText(conversation: dm.id, text: "after cancel")
        _ = try await awaitState(alice, m.id, isSentOrBeyond)
        XCTAssertEqual(collector.events, seen, "no event after cancel")
    }

    func testAsyncStreamOfEvents() async throws {
        let alice = try await registered("alice")
        var states = alice.connectionStates().makeAsyncIterator()
        let first = await states.next()
        XCTAssertEqual(first, .connected)
        try await alice.networkLost()
        let next = await states.next()
        XCTAssertEqual(next, .disconnected(reason: .networkLost))
    }

    func testPanicBecomesInternalError() async throws {
        do {
            try await debugProvokePanic(message: "boom")
            XCTFail("must throw")
        } catch let e as MissiveError {
            XCTAssertEqual(e.code, .internal)
        }
        let alice = try await registered("alice")
        XCTAssertEqual(alice.connectionState(), .connected)
    }

    func testLogsReachTheSinkWithoutThePassword() async throws {
        let sink = Collector()
        setLogSink(sink: sink, maxLevel: .debug)
        let alice = try await registered("alice")
        try await alice.networkLost()
        try await alice.networkAvailable()
        _ = try await eventually("log records") { sink.snapshot.contains { $0.contains("connection state") } ? true : nil }
        XCTAssertFalse(sink.snapshot.contains { $0.contains(password) }, "the password leaked into the logs")
    }
}
