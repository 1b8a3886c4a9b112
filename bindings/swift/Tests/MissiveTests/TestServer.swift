// Starts the real reference server binary (path in MISSIVE_SERVER_BIN, set by `cargo xtask
// test`) on a free loopback port with a temporary data directory; it can be stopped and started
// again on the same port and data, like a server restart.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

final class TestServer {
    let port: UInt16
    let dataDir: URL
    private var process: Process?

    var url: String { "ws://127.0.0.1:\(port)" }

    init() throws {
        port = try TestServer.freePort()
        dataDir = FileManager.default.temporaryDirectory.appendingPathComponent("missive-swift-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dataDir, withIntermediateDirectories: true)
        try start()
    }

    func start() throws {
        guard let bin = ProcessInfo.processInfo.environment["MISSIVE_SERVER_BIN"], FileManager.default.isExecutableFile(atPath: bin) else {
            throw NSError(domain: "TestServer", code: 1, userInfo: [NSLocalizedDescriptionKey: "MISSIVE_SERVER_BIN must name the missive-server binary (run through `cargo xtask test`)"])
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: bin)
        p.arguments = ["--listen", "127.0.0.1:\(port)", "--data", dataDir.appendingPathComponent("data").path, "--rate", "100000"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        process = p
        let deadline = Date().addingTimeInterval(20)
        while !TestServer.canConnect(port) {
            if Date() > deadline || !p.isRunning {
                throw NSError(domain: "TestServer", code: 2, userInfo: [NSLocalizedDescriptionKey: "server did not start on \(port)"])
            }
            usleep(25_000)
        }
    }

    /// A graceful stop (SIGTERM).
    func stop() {
        guard let p = process else { return }
        p.terminate()
        // Not waitUntilExit(): it spins the current run loop, which an async test does not own.
        // Reap the child ourselves (waitpid answers -1 once it is already reaped).
        let pid = p.processIdentifier
        let deadline = Date().addingTimeInterval(15)
        var status: Int32 = 0
        while Date() < deadline {
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid || r == -1 { process = nil; return }
            usleep(10_000)
        }
        kill(pid, SIGKILL)
        _ = waitpid(pid, &status, 0)
        process = nil
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(at: dataDir)
    }

    static func freePort() throws -> UInt16 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        guard bound == 0 else { throw NSError(domain: "TestServer", code: 3) }
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return UInt16(bigEndian: addr.sin_port)
    }

    static func canConnect(_ port: UInt16) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = port.bigEndian
        let len = socklen_t(MemoryLayout<sockaddr_in>.size)
        return withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, len) } } == 0
    }
}
