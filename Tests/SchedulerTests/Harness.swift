import CeleryProtocol
import FlowKit
import FlowKitTesting
import Foundation
import PostgresClient
import RedisClient
@testable import Scheduler

/// A scheduler store and broker on a fresh database and an empty Redis, with a manual clock.
struct Harness {
    let url: String
    let store: SchedulerStore
    let broker: SchedulerBroker
    let redis: RedisConnection
    let clock: ManualClock
    let daemon: SchedulerDaemon

    static let start = ISO8601DateFormatter().date(from: "2026-11-22T06:00:00Z")!

    /// `url`: a database prepared beforehand (e.g. with pools the flows need); a fresh one otherwise.
    static func make(_ flows: [Flow], config: SchedulerConfig = SchedulerConfig(name: "test-scheduler"), url: String? = nil) async throws -> Harness {
        var db = url
        if db == nil { db = try await TestServers.freshDatabase() }
        let url = db!
        let redisConfig = try await TestServers.freshRedis()
        let clock = ManualClock(start)
        let daemon = SchedulerDaemon(databaseURL: url, redis: redisConfig, flows: flows, config: config, clock: clock)
        // Jitter-free retries so that delays can be asserted.
        let store = SchedulerStore(db: PGPool(url, size: 2), random: { 0.5 })
        let h = Harness(url: url, store: store, broker: daemon.broker, redis: RedisConnection(redisConfig), clock: clock, daemon: daemon)
        try await store.registerFlows(flows, now: clock.now())
        return h
    }

    /// Triggers a manual run and starts it; returns the run id.
    func trigger(_ flow: String, conf: [String: JSONValue] = [:]) async throws -> String {
        let run = try await store.createRun(flowId: flow, kind: "manual", conf: conf, logicalDate: nil, now: clock.now())
        try await broker.perform(try await store.startQueuedRuns(now: clock.now()))
        return run.runId
    }

    /// Messages waiting in a queue, oldest first.
    func queued(_ queue: String = "default") async throws -> [CeleryMessage] {
        let raw = try await redis.run { s in try s.command(["LRANGE", queue, "0", "-1"]).array?.compactMap(\.string) ?? [] }
        return try raw.reversed().map(CeleryMessage.decode)
    }

    /// Pops every waiting message as a worker would (without running anything).
    func take(_ queue: String = "default") async throws -> [CeleryMessage] {
        let msgs = try await queued(queue)
        _ = try await redis.run { s in try s.command(["DEL", queue]) }
        return msgs
    }

    func invocation(_ m: CeleryMessage) throws -> FlowTaskInvocation {
        try FlowTaskInvocation(json: m.kwargs[FlowTaskInvocation.kwarg]!)
    }

    /// Reports an outcome for a message, as a worker would, and applies it.
    func report(_ m: CeleryMessage, _ kind: WorkerEvent.Kind, result: JSONValue? = nil, error: String? = nil, worker: String = "w1") async throws {
        let inv = try invocation(m)
        let e = WorkerEvent(kind: kind, worker: worker, at: clock.now(), messageId: m.id, runId: inv.runId, taskId: inv.taskId,
                            tryNumber: inv.tryNumber, result: result, error: error)
        try await broker.perform(try await store.applyEvents([e], now: clock.now()))
    }

    /// Starts then succeeds every message in the queue; returns the task ids run.
    @discardableResult
    func succeedAll(_ queue: String = "default") async throws -> [String] {
        var ran: [String] = []
        for m in try await take(queue) {
            try await report(m, .started)
            try await report(m, .succeeded, result: ["ok": true])
            ran.append(try invocation(m).taskId)
        }
        return ran
    }

    func states(_ runId: String) async throws -> [String: String] {
        Dictionary(uniqueKeysWithValues: try await store.taskInstances(runId: runId).map { ($0.taskId, $0.state) })
    }

    func runState(_ runId: String) async throws -> String { try await store.run(runId).state }

    func sql(_ q: String, _ params: [any PGEncodable] = []) async throws -> [PGRow] {
        let p = params
        return try await store.db.run { s in try s.query(q, p).all }
    }
}

func noop(_ f: FlowBuilder, _ id: String, after: [TaskRef] = [], rule: TriggerRule? = nil) -> TaskRef {
    f.task(id, after: after, triggerRule: rule) { _ in nil }
}
