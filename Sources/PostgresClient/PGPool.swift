import Foundation

/// A fixed set of connections; each `run` goes to the one with the fewest calls in flight.
///
/// A transaction must stay inside one `run` closure: the closure runs whole on one connection.
/// When one connection finds the server gone (a restart), the others are checked at once, so
/// that their stale sockets are replaced before they fail a call of their own.
///
/// ```swift
/// let pool = PGPool(url, size: 4, options: PGOptions(statementTimeout: 10))
/// let n = try await pool.run { s in try s.query("select 1 as one").first?.int("one") }
/// ```
public final class PGPool: @unchecked Sendable {
    public let conninfo: String
    private let connections: [PGConnection]
    private let lock = NSLock()
    private var inFlight: [Int]

    public init(_ conninfo: String, size: Int, label: String = "pg-pool", options: PGOptions = PGOptions()) {
        self.conninfo = conninfo
        self.connections = (0..<max(1, size)).map { PGConnection(conninfo, label: "\(label)-\($0)", options: options) }
        self.inFlight = Array(repeating: 0, count: max(1, size))
    }

    public var size: Int { connections.count }

    @discardableResult
    public func run<T: Sendable>(_ body: @escaping @Sendable (PGSession) throws -> T) async throws -> T {
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
