import CeleryProtocol
import FlowKit
public import Foundation
import PostgresClient

/// Pools and concurrency limits. A task with a pool, a `maxActiveTisPerFlow`, or in a flow with
/// `maxActiveTasks` does not get a message when it becomes ready: it waits in state `queued`
/// with no message (`message_id` NULL) and a `wait_reason`, and the pool admitter — woken by
/// `NOTIFY flowkit_slots` when a limited task is parked or ends, or a pool grows — gives
/// messages to as many waiting tasks as the limits allow, highest priority and oldest first.
/// One admitter transaction runs at a time across schedulers (an advisory lock), so two
/// schedulers never both fill the last slot; what holds a slot is counted from the task
/// instances themselves (queued with a message, or running), never from a counter that could
/// drift.
extension SchedulerStore {
    /// The channel that wakes the pool admitters.
    static let slotsChannel = "flowkit_slots"

    /// Parks ready limited tasks: `queued` with no message, waiting for the admitter.
    func parkLimited(_ s: PGSession, runPk: Int, taskIds: [String], now: Date) {
        s.enqueue("""
            WITH u AS (
                UPDATE task_instances t SET state = 'queued', message_id = NULL, queued_at = $3, next_attempt_at = NULL, started_at = NULL,
                    ended_at = NULL, heartbeat_at = NULL, worker = NULL, error = NULL, result = NULL, wait_reason = 'waiting for a slot'
                FROM (SELECT task_id, state AS old FROM task_instances WHERE run_pk = $1 AND task_id = ANY($2::text[])) o
                WHERE t.run_pk = $1 AND t.task_id = o.task_id AND t.state IN ('pending', 'up_for_retry')
                RETURNING t.task_id, t.try_number, o.old)
            INSERT INTO task_history (run_pk, task_id, try_number, from_state, to_state, at, source, detail)
            SELECT $1, task_id, try_number, old, 'queued', $3, 'scheduler', 'waiting for a concurrency slot' FROM u
            """, [runPk, taskIds, now])
        s.notifyAfterCommit(Self.slotsChannel, "")
    }

    /// One admission pass: gives messages to waiting tasks as their pools, their flows'
    /// `maxActiveTasks` and their tasks' `maxActiveTisPerFlow` allow, and tells the others why
    /// they wait. Returns the messages to push.
    public func admitWaiting(now: Date) async throws -> BrokerWork {
        try await db.run { [self] s in
            try s.transaction {
                try s.query("SELECT pg_advisory_xact_lock($1)", [AdvisoryLock.poolAdmission])
                // Waiting tasks by admission group: one task, or one mapped task's instances, of one run.
                let groups = try s.query("""
                    SELECT t.run_pk, COALESCE(t.map_parent, t.task_id) AS base, t.pool, r.flow_id, r.flow_version,
                           max(t.priority) AS priority, min(t.queued_at) AS since, count(*) AS n
                    FROM task_instances t JOIN runs r ON r.id = t.run_pk
                    WHERE t.state = 'queued' AND t.message_id IS NULL AND r.state = 'running'
                    GROUP BY 1, 2, 3, 4, 5 ORDER BY priority DESC, since, run_pk LIMIT 1000
                    """).all
                guard !groups.isEmpty else { return BrokerWork() }
                var graphsByRun: [Int: FlowGraph] = [:]
                for g in groups { graphsByRun[try g.int("run_pk")] = try graphs.graph(s, flow: g.string("flow_id"), version: g.int("flow_version")) }

                let poolNames = Array(Set(try groups.compactMap { try $0.stringOrNull("pool") })).sorted()
                let cappedFlows = Array(Set(try groups.filter { graphsByRun[try $0.int("run_pk")]!.definition.maxActiveTasks != nil }.map { try $0.string("flow_id") }))
                let cappedTasks = try groups.filter { graphsByRun[try $0.int("run_pk")]!.tasks[try $0.string("base")]?.maxActiveTisPerFlow != nil }
                let usage = try s.queries([
                    ("""
                     SELECT p.name, p.slots, COALESCE((SELECT sum(b.pool_slots) FROM task_instances b WHERE b.pool = p.name
                            AND b.state IN ('queued', 'running') AND b.message_id IS NOT NULL), 0) AS used
                     FROM pools p WHERE p.name = ANY($1::text[])
                     """, [poolNames]),
                    ("""
                     SELECT r.flow_id, count(*) AS used FROM runs r JOIN task_instances b ON b.run_pk = r.id
                     WHERE r.flow_id = ANY($1::text[]) AND r.state = 'running' AND b.state IN ('queued', 'running') AND b.message_id IS NOT NULL
                     GROUP BY r.flow_id
                     """, [cappedFlows]),
                    ("""
                     SELECT r.flow_id, COALESCE(b.map_parent, b.task_id) AS base, count(*) AS used FROM runs r JOIN task_instances b ON b.run_pk = r.id
                     WHERE r.flow_id = ANY($1::text[]) AND COALESCE(b.map_parent, b.task_id) = ANY($2::text[]) AND r.state = 'running'
                       AND b.state IN ('queued', 'running') AND b.message_id IS NOT NULL
                     GROUP BY 1, 2
                     """, [Array(Set(cappedTasks.map { try $0.string("flow_id") })), Array(Set(cappedTasks.map { try $0.string("base") }))]),
                ])
                var poolSize: [String: Int] = [:], poolUsed: [String: Int] = [:]
                for r in usage[0].all { poolSize[try r.string("name")] = try r.int("slots"); poolUsed[try r.string("name")] = try r.int("used") }
                var flowUsed: [String: Int] = [:], taskUsed: [String: Int] = [:]
                for r in usage[1].all { flowUsed[try r.string("flow_id")] = try r.int("used") }
                for r in usage[2].all { taskUsed["\(try r.string("flow_id"))/\(try r.string("base"))"] = try r.int("used") }

                var admitted: [Int: [String]] = [:]
                var reasons: [(run: Int, base: String, reason: String)] = []
                for g in groups {
                    let run = try g.int("run_pk"), base = try g.string("base"), flow = try g.string("flow_id")
                    let graph = graphsByRun[run]!
                    let def = graph.tasks[base]
                    let taskKey = "\(flow)/\(base)"
                    // How many of this group may start now, and what stops the rest.
                    var room = Int.max, reason: String?
                    if let cap = graph.definition.maxActiveTasks {
                        let used = flowUsed[flow, default: 0]
                        if cap - used < room { room = cap - used; reason = "waiting for flow `\(flow)`'s maxActiveTasks: \(used)/\(cap) queued or running" }
                    }
                    if let cap = def?.maxActiveTisPerFlow {
                        let used = taskUsed[taskKey, default: 0]
                        if cap - used < room { room = cap - used; reason = "waiting for task `\(base)`'s maxActiveTisPerFlow: \(used)/\(cap) queued or running" }
                    }
                    var slotsEach = 1
                    if let pool = try g.stringOrNull("pool") {
                        guard let size = poolSize[pool] else {
                            reasons.append((run, base, "waiting for pool `\(pool)`, which does not exist: create it with `flowctl pools set \(pool) --slots N`"))
                            continue
                        }
                        slotsEach = max(1, def?.poolSlots ?? 1)
                        let used = poolUsed[pool, default: 0]
                        if slotsEach > size {
                            reasons.append((run, base, "waiting for pool `\(pool)`: this task takes \(slotsEach) slots and the pool has \(size)"))
                            continue
                        }
                        if (size - used) / slotsEach < room {
                            room = (size - used) / slotsEach
                            reason = "waiting for pool `\(pool)`: \(used)/\(size) slots used"
                        }
                    }
                    room = max(0, min(room, 1000))
                    var taken: [String] = []
                    if room > 0 {
                        taken = try s.query("""
                            SELECT task_id FROM task_instances
                            WHERE run_pk = $1 AND COALESCE(map_parent, task_id) = $2 AND state = 'queued' AND message_id IS NULL
                            ORDER BY priority DESC, queued_at, map_index NULLS FIRST LIMIT $3 FOR NO KEY UPDATE SKIP LOCKED
                            """, [run, base, room]).all.map { try $0.string("task_id") }
                        admitted[run, default: []] += taken
                        flowUsed[flow, default: 0] += taken.count
                        taskUsed[taskKey, default: 0] += taken.count
                        if let pool = try g.stringOrNull("pool") { poolUsed[pool, default: 0] += taken.count * slotsEach }
                    }
                    if try g.int("n") > taken.count {
                        reasons.append((run, base, reason ?? "waiting for a slot: the admitter takes at most 1,000 per group at a time"))
                    }
                }
                var work = BrokerWork()
                for (run, ids) in admitted.sorted(by: { $0.key < $1.key }) where !ids.isEmpty {
                    work.enqueue += try queueTasksNow(s, runPk: run, graph: graphsByRun[run]!, taskIds: ids, now: now)
                }
                if !reasons.isEmpty {
                    s.enqueue("""
                        UPDATE task_instances t SET wait_reason = u.reason
                        FROM unnest($1::bigint[], $2::text[], $3::text[]) AS u(run_pk, base, reason)
                        WHERE t.run_pk = u.run_pk AND COALESCE(t.map_parent, t.task_id) = u.base AND t.state = 'queued'
                          AND t.message_id IS NULL AND t.wait_reason IS DISTINCT FROM u.reason
                        """, [reasons.map(\.run), reasons.map(\.base), reasons.map(\.reason)])
                }
                return work
            }
        }
    }

    /// Every pool with its slots, the slots in use and the task instances waiting for it.
    public func pools() async throws -> [PoolRecord] {
        try await db.run { s in
            try s.query("""
                SELECT p.name, p.slots, p.description, p.created_at, p.updated_at,
                       COALESCE((SELECT sum(b.pool_slots) FROM task_instances b WHERE b.pool = p.name
                                 AND b.state IN ('queued', 'running') AND b.message_id IS NOT NULL), 0) AS used,
                       (SELECT count(*) FROM task_instances w WHERE w.pool = p.name AND w.state = 'queued' AND w.message_id IS NULL) AS waiting
                FROM pools p ORDER BY p.name
                """).decode(PoolRecord.self)
        }
    }

    /// Creates a pool or changes its slots (and description). Growing a pool wakes the
    /// admitters at once; shrinking one lets running tasks finish and starts none until the
    /// pool is under its new size.
    public func setPool(name: String, slots: Int, description: String?) async throws -> PoolRecord {
        guard Flow.isValidPoolName(name) else {
            throw BadRequest("pool name `\(name)` is invalid: use 1–100 letters, digits, `_`, `-` and `.`")
        }
        guard (0...1_000_000).contains(slots) else { throw BadRequest("pool `\(name)`: slots must be 0…1000000, not \(slots)") }
        try await audited { s, actor in
            try s.query("""
                INSERT INTO pools (name, slots, description) VALUES ($1, $2, COALESCE($3, ''))
                ON CONFLICT (name) DO UPDATE SET slots = EXCLUDED.slots, description = COALESCE($3, pools.description), updated_at = now()
                """, [name, slots, description])
            try self.audit(s, actor, "pool_set", name, ["slots": .int(slots)], now: self.clock.now())
            s.notifyAfterCommit(Self.slotsChannel, name)
        }
        return try await pools().first { $0.name == name }!
    }

    /// Deletes a pool no active flow uses and no task instance waits for or holds.
    public func deletePool(name: String) async throws {
        return try await audited { s, actor in
            guard try s.query("SELECT 1 FROM pools WHERE name = $1 FOR UPDATE", [name]).first != nil else {
                throw NotFound("unknown pool `\(name)`")
            }
            let users = try s.query("""
                SELECT DISTINCT f.flow_id FROM flows f JOIN flow_versions v ON v.flow_id = f.flow_id AND v.version = f.current_version,
                       jsonb_array_elements(v.definition->'tasks') t
                WHERE f.is_active AND t->>'pool' = $1 ORDER BY 1
                """, [name]).all.map { try $0.string("flow_id") }
            guard users.isEmpty else {
                throw StateConflict("pool `\(name)` is used by flow\(users.count == 1 ? "" : "s") \(users.map { "`\($0)`" }.joined(separator: ", "))")
            }
            let busy = try s.query("SELECT count(*) AS n FROM task_instances WHERE pool = $1 AND state IN ('queued', 'running')", [name]).single().int("n")
            guard busy == 0 else { throw StateConflict("pool `\(name)` has \(busy) task instances queued or running") }
            try s.query("DELETE FROM pools WHERE name = $1", [name])
            try self.audit(s, actor, "pool_delete", name, now: self.clock.now())
        }
    }

    /// Refuses flows whose tasks name pools that do not exist (at registration).
    func checkPools(_ s: PGSession, _ defs: [FlowDefinition]) throws {
        var wanted: [String: [String]] = [:]
        for d in defs { for t in d.tasks { if let p = t.pool { wanted[p, default: []].append("`\(d.id)`.`\(t.id)`") } } }
        guard !wanted.isEmpty else { return }
        let known = Set(try s.query("SELECT name FROM pools WHERE name = ANY($1::text[])", [Array(wanted.keys)]).all.map { try $0.string("name") })
        for (pool, users) in wanted.sorted(by: { $0.key < $1.key }) where !known.contains(pool) {
            let all = try s.query("SELECT name FROM pools ORDER BY name").all.map { try $0.string("name") }
            let hint = nearest(pool, among: all).map { " (did you mean `\($0)`?)" } ?? ""
            throw PoolError("task \(users.joined(separator: ", ")) uses pool `\(pool)`, which does not exist\(hint): create it with `flowctl pools set \(pool) --slots N`")
        }
    }
}

/// A flow names a pool that does not exist: registration stops.
public struct PoolError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ d: String) { description = d }
}

/// A pool, with its slots in use and the task instances waiting for it.
public struct PoolRecord: Codable, Sendable {
    public var name: String
    public var slots: Int
    public var usedSlots: Int
    public var waiting: Int
    public var description: String
    public var createdAt: Date
    public var updatedAt: Date

    init(row r: PGRow) throws(PGDecodingError) {
        name = try r.string("name")
        slots = try r.int("slots")
        usedSlots = try r.int("used")
        waiting = try r.int("waiting")
        description = try r.string("description")
        createdAt = try r.date("created_at")
        updatedAt = try r.date("updated_at")
    }
}
