import FlowKit
import Foundation
import ProcessSupport
#if canImport(Glibc)
import Glibc
#endif

/// The private PostgreSQL and redis-server that `flowctl standalone` runs under `.flowkit/`
/// when no URLs are configured; data survives restarts.
///
/// Started and stopped by `scripts/services.sh` — the script the tests, `make faults`, `make
/// stress` and `make bench` use — carried inside the binary (`EmbeddedServicesScript`) and
/// written under `home` to run. Durable (fsync on), unlike the tests' servers.
struct LocalServers {
    let home: URL
    var pgPort = 54329
    var redisPort = 63799

    var pgData: URL { home.appendingPathComponent("postgres") }
    var databaseURL: String { "postgres://flowkit@127.0.0.1:\(pgPort)/flowkit" }
    var redisURL: String { "redis://127.0.0.1:\(redisPort)/0" }

    /// Runs the services script with `command`, for this home and these ports.
    func script(_ command: String) throws {
        try FileManager.default.createDirectory(at: home, withIntermediateDirectories: true)
        let file = home.appendingPathComponent("services.sh")
        try EmbeddedServicesScript.text.write(to: file, atomically: true, encoding: .utf8)
        try sh(["/usr/bin/env", "FLOWKIT_TEST_HOME=\(home.path)", "FLOWKIT_TEST_PG_PORT=\(pgPort)", "FLOWKIT_TEST_REDIS_PORT=\(redisPort)",
                "FLOWKIT_TEST_PG_DURABLE=1", "FLOWKIT_SERVICES_PG_DIR=\(pgData.path)", "FLOWKIT_SERVICES_DATABASE=flowkit",
                "/bin/sh", file.path, command], quiet: true)
    }

    func start(log: (String) -> Void) throws {
        try script("start")
        log("private PostgreSQL on 127.0.0.1:\(pgPort) and Redis on 127.0.0.1:\(redisPort), data in \(home.path)")
    }

    func stop(log: (String) -> Void) {
        do { try script("stop"); log("private PostgreSQL and Redis stopped") } catch { log("stopping the private servers: \(error)") }
    }
}

/// Runs a command to completion; throws with its output when it fails.
@discardableResult
func sh(_ argv: [String], quiet: Bool = false) throws -> String {
    let (status, text) = try ProcessRunner.runToCompletion(argv)
    guard status == 0 else {
        throw CLIError("`\(argv.joined(separator: " "))` failed (status \(status)): \(text.suffix(800))")
    }
    return text
}
