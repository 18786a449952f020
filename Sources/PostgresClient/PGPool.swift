import Foundation

/// A fixed set of connections; each `run` goes to the one with the fewest calls in flight.
///
/// A transaction must stay inside one `run` closure: the closure runs whole on one connection.
public final class PGPool: @unchecked Sendable {
    public let conninfo: String
    private let connections: [PGConnection]
    private let lock = NSLock()
    private var inFlight: [Int]

    public init(_ conninfo: String, size: Int, label: String = "pg-pool") {
        self.conninfo = conninfo
        self.connections = (0..<max(1, size)).map { PGConnection(conninfo, label: "\(label)-\($0)") }
        self.inFlight = Array(repeating: 0, count: max(1, size))
    }

    @discardableResult
    public func run<T: Sendable>(_ body: @escaping @Sendable (PGSession) throws -> T) async throws -> T {
        let i: Int = lock.withLock {
            let i = inFlight.indices.min { inFlight[$0] < inFlight[$1] }!
            inFlight[i] += 1
            return i
        }
        defer { lock.withLock { inFlight[i] -= 1 } }
        return try await connections[i].run(body)
    }

    public func close() { connections.forEach { $0.close() } }
}
