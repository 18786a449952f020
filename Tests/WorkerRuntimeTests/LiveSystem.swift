import CeleryProtocol
import FlowKit
import FlowKitTesting
import Flows
import Foundation
import PostgresClient
import RedisClient
import Scheduler
import WorkerRuntime

/// A scheduler and workers running for real, in this process, on a fresh database and Redis,
/// with short timeouts so that faults resolve quickly.
final class LiveSystem: @unchecked Sendable {
    let url: String
    let redisConfig: RedisConfig
    let daemon: SchedulerDaemon
    let store: SchedulerStore
    let redis: RedisConnection
    var workers: [Worker] = []
    var tasks: [Task<Void, any Error>] = []
    let flows: [Flow]

    static func workerConfig(_ name: String, concurrency: Int = 2) -> WorkerConfig {
        var c = WorkerConfig(name: name, queues: ["default"], concurrency: concurrency)
        c.heartbeatInterval = 0.3
        c.visibilityTimeout = 2
        c.shutdownGrace = 1
        return c
    }

    init(flows: [Flow] = allFlows, workers: Int = 1) async throws {
        self.flows = flows
        url = try await TestServers.freshDatabase()
        redisConfig = try await TestServers.freshRedis()
        var sc = SchedulerConfig(name: "live-scheduler")
        sc.zombieThreshold = 6
        sc.lostMessageAfter = 3
        sc.visibilityTimeout = 2
        sc.maintenanceInterval = 0.3
        sc.stalledRunAfter = 1
        // Waiting tasks must start because a slot freed (NOTIFY), never because a poll came round.
        sc.poolAdmitterMaxWait = 60
        daemon = SchedulerDaemon(databaseURL: url, redis: redisConfig, flows: flows, config: sc)
        store = SchedulerStore(db: PGPool(url, size: 2))
        redis = RedisConnection(redisConfig)
        let d = daemon
        tasks.append(Task { try await d.run() })
        for i in 0..<workers { startWorker("w\(i + 1)") }
        // Registered once the scheduler has upserted the flows.
        try await eventually("flows registered") { (try? await self.store.flows().count) == flows.count }
    }

    @discardableResult
    func startWorker(_ name: String, concurrency: Int = 2, flows: [Flow]? = nil) -> Worker {
        let w = Worker(redis: redisConfig, flows: flows ?? self.flows, config: Self.workerConfig(name, concurrency: concurrency))
        workers.append(w)
        tasks.append(Task { try await w.run() })
        return w
    }

    func trigger(_ flow: String, conf: [String: JSONValue] = [:]) async throws -> String {
        try await store.createRun(flowId: flow, kind: "manual", conf: conf, logicalDate: nil, now: Date()).runId
    }

    /// Waits for the run to end; returns its final state.
    func waitForRun(_ runId: String, timeout: Double = 30) async throws -> String {
        var state = ""
        try await eventually("run \(runId) to end", timeout: timeout) {
            state = try await store.run(runId).state
            return ["success", "failed", "cancelled"].contains(state)
        }
        return state
    }

    func waitForTask(_ runId: String, _ task: String, state: String, timeout: Double = 20) async throws {
        try await eventually("\(task) to be \(state)", timeout: timeout) {
            (try? await self.store.taskInstances(runId: runId).first { $0.taskId == task }?.state) == state
        }
    }

    func stop() async {
        for w in workers { w.shutdown() }
        for t in tasks { t.cancel() }
        for t in tasks { _ = await t.result }
    }

    /// Runs a statement on the system's database.
    func sql(_ statement: String) async throws {
        let conn = PGConnection(url, label: "test-sql")
        defer { conn.close() }
        _ = try await conn.run { s in try s.execute(statement) }
    }

    func successes(_ runId: String) async throws -> Int {
        try await PGConnection(url, label: "test-sql").run { s in
            try s.query("""
                SELECT count(*) AS n FROM task_history h JOIN runs r ON r.id = h.run_pk
                WHERE r.run_id = $1 AND h.to_state = 'success' AND h.applied
                """, [runId]).single().int("n")
        }
    }
}

/// Runs `body` against a live system and always stops it, so no scheduler or worker outlives its test.
func withSystem(flows: [Flow] = allFlows, workers: Int = 1, _ body: (LiveSystem) async throws -> Void) async throws {
    let sys = try await LiveSystem(flows: flows, workers: workers)
    do {
        try await body(sys)
    } catch {
        await sys.stop()
        throw error
    }
    await sys.stop()
}
