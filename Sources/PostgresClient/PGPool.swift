import Foundation

/// A fixed set of connections; each `run` goes to the one with the fewest calls in flight.
///
/// A transaction must stay inside one `run` closure: the closure runs whole on one connection.
/// When one connection finds the server gone (a restart), the others are checked at once, so
/// that their stale sockets are replaced before they fail a call of their own.
///
/// With `waitForConnection`, a call that finds no session (the server slow to accept one on
/// an overloaded machine, or restarting) waits and tries again, on whichever connection is
/// free, until that many seconds have passed since it began, instead of failing on the first
/// connect timeout: nothing of it reached the server, so a retry cannot do it twice. The API
/// uses it with `connectAll()` at start, so that no request opens a connection on its own.
///
/// ```swift
/// let pool = PGPool(url, size: 4, options: PGOptions(statementTimeout: 10), waitForConnection: 30)
/// await pool.connectAll()
/// let n = try await pool.run { s in try s.query("select 1 as one").first?.int("one") }
/// ```
public final class PGPool: @unchecked Sendable {
    public let conninfo: String
    private let connections: [PGConnection]
    private let lock = NSLock()
    private var inFlight: [Int]
    private let waitForConnection: Double

    public init(_ conninfo: String, size: Int, label: String = "pg-pool", options: PGOptions = PGOptions(), waitForConnection: Double = 0) {
        self.conninfo = conninfo
        self.connections = (0..<max(1, size)).map { PGConnection(conninfo, label: "\(label)-\($0)", options: options) }
        self.inFlight = Array(repeating: 0, count: max(1, size))
        self.waitForConnection = waitForConnection
    }

    public var size: Int { connections.count }

    /// Opens every connection now (errors are left for the calls that follow to meet).
    public func connectAll() async {
        await withTaskGroup(of: Void.self) { g in
            for c in connections { g.addTask { _ = try? await c.run { _ in () } } }
        }
    }

    @discardableResult
    public func run<T: Sendable>(_ body: @escaping @Sendable (PGSession) throws -> T) async throws -> T {
        let began = ContinuousClock.now
        var pause = 0.05
        while true {
            do {
                return try await runOnce(body)
            } catch let e as PGError where e.notConnected && waitForConnection > 0 {
                let waited = ContinuousClock.now - began
                guard waited + .milliseconds(Int64(pause * 1000)) < .milliseconds(Int64(waitForConnection * 1000)) else { throw e }
                try await Task.sleep(for: .milliseconds(Int64(pause * 1000)))
                pause = min(pause * 2, 1)
            }
        }
    }

    private func runOnce<T: Sendable>(_ body: @escaping @Sendable (PGSession) throws -> T) async throws -> T {
        let i: Int = lock.withLock {
            let i = inFlight.indices.min { inFlight[$0] < inFlight[$1] }!
            inFlight[i] += 1
            return i
        }
        defer { lock.withLock { inFlight[i] -= 1 } }
        do {
            return try await connections[i].run(body)
        } catch let e as PGError where e.isConnectionLoss {
            for (j, c) in connections.enumerated() where j != i { c.revalidate() }
            throw e
        }
    }

    /// Records the statements every connection sends (tests), returning what was recorded.
    @discardableResult
    public func traceStatements(_ on: Bool) -> [String] {
        connections.flatMap { $0.traceStatements(on) }
    }

    public func close() { connections.forEach { $0.close() } }
}
