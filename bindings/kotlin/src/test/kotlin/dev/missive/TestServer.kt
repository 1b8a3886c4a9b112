// Starts the real reference server binary (path in the system property missive.server.bin, set
// by `cargo xtask test`) on a free loopback port with a temporary data directory; it can be
// stopped and started again on the same port and data, like a server restart.
package dev.missive

import java.io.File
import java.net.ServerSocket
import java.net.Socket
import java.nio.file.Files
import java.nio.file.Path
import java.util.concurrent.TimeUnit

class TestServer private constructor(private val dataDir: Path, val port: Int) : AutoCloseable {
    private var process: Process? = null
    val url: String get() = "ws://127.0.0.1:$port"

    fun start() {
        val bin = System.getProperty("missive.server.bin")
        check(!bin.isNullOrBlank() && File(bin).canExecute()) {
            "missive.server.bin must name the missive-server binary (run through `cargo xtask test`), got '$bin'"
        }
        process = ProcessBuilder(bin, "--listen", "127.0.0.1:$port", "--data", dataDir.resolve("data").toString(), "--rate", "100000")
            .redirectErrorStream(true)
            .redirectOutput(ProcessBuilder.Redirect.appendTo(dataDir.resolve("server.log").toFile()))
            .start()
        val deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20)
        while (true) {
            try {
                Socket("127.0.0.1", port).close()
                return
            } catch (e: java.io.IOException) {
                check(System.nanoTime() < deadline) { "the server did not start listening on $port" }
                check(process!!.isAlive) { "the server exited: " + dataDir.resolve("server.log").toFile().readText() }
                Thread.sleep(25)
            }
        }
    }

    /** A graceful stop (SIGTERM). */
    fun stop() {
        process?.let {
            it.destroy()
            if (!it.waitFor(15, TimeUnit.SECONDS)) it.destroyForcibly().waitFor()
        }
        process = null
    }

    override fun close() {
        stop()
        dataDir.toFile().deleteRecursively()
    }

    companion object {
        fun start(): TestServer {
            val port = ServerSocket(0).use { it.localPort }
            return TestServer(Files.createTempDirectory("missive-kotlin"), port).also { it.start() }
        }
    }
}
