// JUnit 5 tests of the Kotlin bindings against a real reference server process: login and wrong
// password, 1:1 and group chat, message states, offline sends, a server restart, error codes,
// cancelled subscriptions, a panic inside the SDK, and the log sink.
package dev.missive

import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.AfterEach
import org.junit.jupiter.api.BeforeEach
import org.junit.jupiter.api.Test
import java.nio.file.Files
import java.util.concurrent.CopyOnWriteArrayList
import java.util.concurrent.atomic.AtomicInteger
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertIs
import kotlin.test.assertTrue

private const val PASSWORD = "correct horse battery"
private const val WAIT_MS = 30_000L

class MissiveClientTest {
    private lateinit var server: TestServer
    private val clients = mutableListOf<MissiveClient>()

    @BeforeEach
    fun startServer() {
        server = TestServer.start()
    }

    @AfterEach
    fun stopServer() = runBlocking {
        clients.forEach { it.shutdown(); it.close() }
        server.close()
    }

    private suspend fun client(device: String = "jvm", store: String? = null): MissiveClient {
        val settings = clientSettings(server.url, store, device).copy(backoffBaseMs = 20u, backoffCapMs = 500u)
        return MissiveClient.open(settings).also { clients += it }
    }

    private suspend fun registered(name: String): MissiveClient = client().also { it.register(name, PASSWORD) }

    // Polls the store (bounded): no race between reading the current state and subscribing.
    private suspend fun MissiveClient.awaitState(id: String, pred: (MessageState) -> Boolean): Message =
        withTimeout(WAIT_MS) {
            while (true) {
                message(id)?.let { if (pred(it.state)) return@withTimeout it }
                kotlinx.coroutines.delay(20)
            }
            @Suppress("UNREACHABLE_CODE") error("unreachable")
        }

    private suspend fun MissiveClient.awaitMessage(id: String): Message = awaitState(id) { true }

    private suspend fun texts(c: MissiveClient, conversation: String): List<String> =
        c.messages(conversation, null, 500u).messages.reversed().map { (it.body as MessageBody.Text).text }

    @Test
    fun `login works and a wrong password fails with AUTH_FAILED`(): Unit = runBlocking {
        registered("alice").shutdown()
        val c = client()
        val e = assertFailsWith<MissiveException.Failed> { c.login("alice", "not my password") }
        assertEquals(ErrorCode.AUTH_FAILED, e.code)
        assertEquals(false, e.isRetryable)
        assertIs<ConnectionState.AuthFailed>(c.connectionState())
        c.login("alice", PASSWORD)
        assertEquals(ConnectionState.Connected, c.connectionState())
        assertEquals("alice", c.username())
    }

    @Test
    fun `one to one and group chat between two clients`(): Unit = runBlocking {
        val alice = registered("alice")
        val bob = registered("bob")
        val dm = alice.createDirect("bob")
        assertEquals(ConversationKind.DIRECT, dm.kind)
        val hi = alice.sendText(dm.id, "hi bob")
        assertEquals("hi bob", (bob.awaitMessage(hi.id).body as MessageBody.Text).text)
        val group = alice.createGroup("team", listOf("bob"))
        assertEquals(setOf("alice", "bob"), group.members.toSet())
        val fromBob = withTimeout(WAIT_MS) {
            // Bob learns of the group through sync; then he writes to it.
            while (bob.conversation(group.id) == null) kotlinx.coroutines.delay(20)
            bob.sendText(group.id, "hello team")
        }
        alice.awaitMessage(fromBob.id)
        assertEquals(listOf("hello team"), texts(alice, group.id))
    }

    @Test
    fun `local echo then Sent then Delivered then Read`(): Unit = runBlocking {
        val alice = registered("alice")
        val bob = registered("bob")
        val dm = alice.createDirect("bob")
        val echo = alice.sendText(dm.id, "states")
        assertEquals(MessageState.Pending, echo.state)
        assertTrue(echo.outgoing)
        alice.awaitState(echo.id) { it == MessageState.Sent || it == MessageState.Delivered || it == MessageState.Read }
        alice.awaitState(echo.id) { it == MessageState.Delivered || it == MessageState.Read }
        bob.awaitMessage(echo.id)
        bob.markRead(dm.id)
        alice.awaitState(echo.id) { it == MessageState.Read }
    }

    @Test
    fun `an offline send is delivered after reconnect`(): Unit = runBlocking {
        val alice = registered("alice")
        val bob = registered("bob")
        val dm = alice.createDirect("bob")
        alice.networkLost()
        val queued = alice.sendText(dm.id, "written offline")
        assertEquals(MessageState.Pending, queued.state)
        assertEquals(1uL, alice.unsentCount())
        alice.networkAvailable()
        alice.awaitState(queued.id) { it != MessageState.Pending && it !is MessageState.Failed }
        bob.awaitMessage(queued.id)
        assertEquals(0uL, alice.unsentCount())
    }

    @Test
    fun `a server restart mid conversation loses nothing`(): Unit = runBlocking {
        val store = Files.createTempDirectory("missive-kt-store").resolve("alice.db").toString()
        val alice = client(store = store).also { it.register("alice", PASSWORD) }
        val bob = registered("bob")
        val dm = alice.createDirect("bob")
        val before = alice.sendText(dm.id, "before")
        alice.awaitState(before.id) { it != MessageState.Pending }
        server.stop()
        val during = (1..5).map { alice.sendText(dm.id, "during $it") }
        server.start()
        alice.awaitState(during.last().id) { it != MessageState.Pending && it !is MessageState.Failed }
        bob.awaitMessage(during.last().id)
        assertEquals(listOf("before") + (1..5).map { "during $it" }, texts(bob, dm.id))
    }

    @Test
    fun `refused requests carry stable error codes`(): Unit = runBlocking {
        val alice = registered("alice")
        val refused = assertFailsWith<MissiveException.Failed> { alice.createDirect("nobody") }
        assertEquals(ErrorCode.REFUSED, refused.code)
        assertTrue(refused.detail.contains("NOT_FOUND"), refused.detail)
        val unknown = assertFailsWith<MissiveException.Failed> { alice.sendText("424242", "into the void") }
        assertEquals(ErrorCode.NOT_FOUND, unknown.code)
        val empty = assertFailsWith<MissiveException.Failed> { alice.sendText(alice.createDirect("alice2".also { registered(it).shutdown() }).id, "") }
        assertEquals(ErrorCode.INVALID_ARGUMENT, empty.code)
    }

    @Test
    fun `a cancelled subscription stops`(): Unit = runBlocking {
        val alice = registered("alice")
        registered("bob")
        val dm = alice.createDirect("bob")
        val seen = AtomicInteger()
        val subscription = alice.subscribe(object : EventListener {
            override fun onEvent(event: ClientEvent) {
                seen.incrementAndGet()
            }
        })
        withTimeout(WAIT_MS) { while (seen.get() == 0) kotlinx.coroutines.delay(10) } // the current state arrives first
        subscription.cancel()
        assertEquals(false, subscription.isActive())
        val after = seen.get()
        val m = alice.sendText(dm.id, "after cancel")
        alice.awaitState(m.id) { it != MessageState.Pending }
        assertEquals(after, seen.get(), "no event after cancel")
    }

    @Test
    fun `a panic inside the SDK becomes an INTERNAL error and the JVM goes on`(): Unit = runBlocking {
        val e = assertFailsWith<MissiveException.Failed> { debugProvokePanic("boom") }
        assertEquals(ErrorCode.INTERNAL, e.code)
        assertTrue(e.detail.contains("boom"))
        val alice = registered("alice")
        assertEquals(ConnectionState.Connected, alice.connectionState())
    }

    @Test
    fun `logs reach the sink and never contain the password`(): Unit = runBlocking {
        val records = CopyOnWriteArrayList<String>()
        setLogSink(object : LogSink {
            override fun log(level: LogLevel, target: String, message: String) {
                records += "$level $target $message"
            }
        }, LogLevel.DEBUG)
        val alice = registered("alice")
        alice.networkLost()
        alice.networkAvailable()
        withTimeout(WAIT_MS) { while (records.none { it.contains("connection state") }) kotlinx.coroutines.delay(10) }
        assertTrue(records.none { it.contains(PASSWORD) }, "the password leaked into the logs")
    }
}
