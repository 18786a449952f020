public import CeleryProtocol
public import FlowKit
import Foundation
public import PostgresClient
import Synchronization

/// What a committed transaction asks of the broker: messages to enqueue, tries to cancel, and
/// claimed messages to forget (their try was reaped).
public struct BrokerWork: Sendable {
    public var enqueue: [CeleryMessage] = []
    public var cancel: [String] = []
    public var forget: [String] = []
    /// Worker events about runs the database does not have, for the dead-letter list (with a
    /// log line): they changed nothing.
    public var orphans: [(event: WorkerEvent, reason: String)] = []
    public init() {}
    public var isEmpty: Bool { enqueue.isEmpty && cancel.isEmpty && forget.isEmpty }
    mutating func merge(_ o: BrokerWork) {
        enqueue += o.enqueue; cancel += o.cancel; forget += o.forget; orphans += o.orphans
    }
}

/// All SQL FlowKit runs, behind named operations; services call these and never build SQL.
///
/// Operations that change state run in one transaction on one connection and return the
/// `BrokerWork` to do once the transaction has committed.
public final class SchedulerStore: @unchecked Sendable {
    /// The pool behind the operations; not public: callers use the named operations.
    let db: PGPool

    let graphs = GraphCache()
    /// Whether the primary names synchronous standbys (`synchronous_standby_names`; read with
    /// every scheduler heartbeat). Then event batches commit as the server says instead of
    /// without waiting: an asynchronous commit sends the next tasks' messages before a standby
    /// has the commit, and a failover to that standby would send them — run them — again.
    let commitsWaitForStandby = Atomic<Bool>(false)
    /// Each run's flow and version (they never change), for reads planned before the run's row is.
    let runFlows = RunFlowCache()

    /// Random numbers in [0, 1) for retry jitter (injectable for tests).
    let random: @Sendable () -> Double

    /// Opens the pool's connections now, so that no request opens one on its critical path.
    public func connectAll() async { await db.connectAll() }

    /// The time of day of the writes whose callers pass none (audit entries of admin calls).
    let clock: any WallClock

    public init(db: PGPool, clock: any WallClock = SystemClock(), random: @escaping @Sendable () -> Double = { Double.random(in: 0..<1) }) {
        self.db = db
        self.clock = clock
        self.random = random
    }
}

/// Flow graphs by flow and version; versions never change once written, so entries never go stale.
final class GraphCache: @unchecked Sendable {
    private let lock = NSLock()
    private var graphs: [String: FlowGraph] = [:]

    /// The graph when it is loaded already; nil otherwise (no query).
    func cached(flow: String, version: Int) -> FlowGraph? { lock.withLock { graphs["\(flow)@\(version)"] } }

    func graph(_ s: PGSession, flow: String, version: Int) throws -> FlowGraph {
        let key = "\(flow)@\(version)"
        if let g = lock.withLock({ graphs[key] }) { return g }
        guard let row = try s.query("SELECT definition::text AS d, hash FROM flow_versions WHERE flow_id = $1 AND version = $2", [flow, version]).first else {
            throw NotFound("flow `\(flow)` has no version \(version)")
        }
        var g = FlowGraph(try FlowDefinition.decode(row.string("d")))
        g.version = version
        g.hash = try row.stringOrNull("hash")
        lock.withLock { graphs[key] = g }
        return g
    }
}

/// Runs' flows and versions by run id, bounded (emptied when full: a miss only costs a round trip).
final class RunFlowCache: @unchecked Sendable {
    private let lock = NSLock()
    private var entries: [String: (flow: String, version: Int)] = [:]
    static let capacity = 20_000

    func get(_ runId: String) -> (flow: String, version: Int)? { lock.withLock { entries[runId] } }

    func set(_ runId: String, flow: String, version: Int) {
        lock.withLock {
            if entries.count >= Self.capacity { entries.removeAll(keepingCapacity: true) }
            entries[runId] = (flow, version)
        }
    }
}

/// Every advisory lock key FlowKit takes, in one place so that no two collide (the pool
/// admitter once shared the leader's key, and waited forever on a follower).
enum AdvisoryLock {
    static let migrations = 7_240_001
    static let registration = 7_240_002
    static let leader = 7_240_003
    static let poolAdmission = 7_240_004
}
