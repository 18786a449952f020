public import FlowKit
public import FlowJSON
public import Foundation
import PostgresClient

/// What a backfill does with a tick that already has a run (Airflow 3's `reprocess_behavior`).
public enum Reprocess: String, Codable, Sendable, CaseIterable {
    /// Only ticks without a run get one.
    case none
    /// Also re-run the failed runs of the range.
    case failed
    /// Also re-run the failed and the successful runs of the range.
    case all
}

/// One tick of a backfill's plan.
public struct BackfillTick: Codable, Sendable, Equatable {
    public var logicalDate: Date
    /// `create` a run, `rerun` the existing one, or `skip` the tick (`reason` says why).
    public var action: String
    public var reason: String?
    /// The run the tick made, re-ran or skipped (none yet for a `create` not carried out).
    public var runId: String?
    public var runState: String?
    /// Carried out (always true for a skip).
    public var done: Bool
}

/// How many ticks of a plan each action has.
public struct BackfillCounts: Codable, Sendable, Equatable {
    public var create = 0, rerun = 0, skip = 0
    public init() {}
}

/// What a backfill would do: `POST /api/v1/backfills` with `dryRun`, and the plan a backfill keeps.
public struct BackfillPlan: Codable, Sendable {
    public var flowId: String
    public var from: Date
    public var to: Date
    public var reprocess: Reprocess
    public var newestFirst: Bool
    public var maxActiveRuns: Int
    public var ticks: [BackfillTick]
    public var counts: BackfillCounts
    /// For each `reprocess` choice, how many of the range's existing runs it would re-run:
    /// shown before creating, so that the choice is made knowing what it touches.
    public var reprocessCounts: [String: Int]
}

/// A backfill and its progress.
public struct BackfillRecord: Codable, Sendable {
    public var id: Int
    public var flowId: String
    public var from: Date
    public var to: Date
    public var conf: [String: JSONValue]
    public var reprocess: Reprocess
    public var maxActiveRuns: Int
    public var newestFirst: Bool
    /// `running`, `paused`, `cancelled` or `completed`.
    public var state: String
    public var createdBy: String?
    public var createdAt: Date
    public var updatedAt: Date
    public var completedAt: Date?
    /// The plan's ticks by action, and how many are carried out.
    public var counts: BackfillCounts
    public var ticksDone: Int
    /// The backfill's runs (made or re-run) by state.
    public var runs: [String: Int]

    init(row r: PGRow) throws {
        id = try r.int("id")
        flowId = try r.string("flow_id")
        from = try r.date("from_date")
        to = try r.date("to_date")
        conf = try r.json("conf").objectValue ?? [:]
        reprocess = try r.enumValue("reprocess")
        maxActiveRuns = try r.int("max_active_runs")
        newestFirst = try r.bool("newest_first")
        state = try r.string("state")
        createdBy = try r.stringOrNull("created_by")
        createdAt = try r.date("created_at")
        updatedAt = try r.date("updated_at")
        completedAt = try r.dateOrNull("completed_at")
        counts = BackfillCounts()
        counts.create = try r.int("n_create")
        counts.rerun = try r.int("n_rerun")
        counts.skip = try r.int("n_skip")
        ticksDone = try r.int("n_done")
        runs = try r.json("run_states").objectValue?.compactMapValues(\.intValue) ?? [:]
    }

    /// The columns `init(row:)` reads, from `backfills b`.
    static let columns = """
        b.id, b.flow_id, b.from_date, b.to_date, b.conf, b.reprocess, b.max_active_runs, b.newest_first, b.state, b.created_by,
        b.created_at, b.updated_at, b.completed_at,
        k.n_create, k.n_rerun, k.n_skip, k.n_done,
        (SELECT coalesce(jsonb_object_agg(state, n), '{}') FROM (SELECT state, count(*) AS n FROM runs WHERE backfill_id = b.id GROUP BY state) x) AS run_states
        """
    /// Joined after `FROM backfills b`: its ticks counted in one pass.
    static let tickCounts = """
        CROSS JOIN LATERAL (SELECT count(*) FILTER (WHERE action = 'create') AS n_create, count(*) FILTER (WHERE action = 'rerun') AS n_rerun,
                                   count(*) FILTER (WHERE action = 'skip') AS n_skip, count(*) FILTER (WHERE done) AS n_done
                            FROM backfill_ticks WHERE backfill_id = b.id) k
        """
}

/// `GET /api/v1/backfills/{id}`: the backfill and its ticks in the order they are carried out.
public struct BackfillDetail: Codable, Sendable {
    public var backfill: BackfillRecord
    public var ticks: [BackfillTick]
}

/// What a new backfill asks for.
public struct BackfillRequest: Sendable {
    public var flowId: String
    public var from: Date
    public var to: Date
    public var conf: [String: JSONValue] = [:]
    public var reprocess: Reprocess = .none
    public var maxActiveRuns = 10
    public var newestFirst = false
    public init(flowId: String, from: Date, to: Date) { self.flowId = flowId; self.from = from; self.to = to }
}

extension SchedulerStore {
    /// The most ticks one backfill may cover.
    static let maxBackfillTicks = 10_000

    /// What `request` would do, without doing it (`dryRun`).
    public func planBackfill(_ request: BackfillRequest) async throws -> BackfillPlan {
        try await db.run { [self] s in try plan(s, request, lock: false).plan }
    }

    /// Creates a backfill: its plan is made and kept in the same transaction (so it is exactly
    /// what a dry run a moment before said, unless runs changed in between), then the schedulers
    /// carry it out (`advanceBackfills`).
    public func createBackfill(_ request: BackfillRequest, now: Date) async throws -> BackfillDetail {
        try await audited { [self] s, actor in
            let (plan, existing) = try plan(s, request, lock: true)
            let id = try s.query("""
                INSERT INTO backfills (flow_id, from_date, to_date, conf, reprocess, max_active_runs, newest_first, state, created_by, created_at, updated_at)
                VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, 'running', $8, $9, $9) RETURNING id
                """, [request.flowId, request.from, request.to, JSONValue.object(request.conf).jsonbText, request.reprocess.rawValue,
                      request.maxActiveRuns, request.newestFirst, actor, now]).single().int("id")
            try s.query("""
                INSERT INTO backfill_ticks (backfill_id, position, logical_date, action, reason, run_pk, done)
                SELECT $1, u.pos, u.at, u.action, NULLIF(u.reason, ''), NULLIF(u.run_pk, 0), u.action = 'skip'
                FROM unnest($2::int[], $3::timestamptz[], $4::text[], $5::text[], $6::bigint[]) AS u(pos, at, action, reason, run_pk)
                """, [id, Array(plan.ticks.indices), plan.ticks.map(\.logicalDate), plan.ticks.map(\.action), plan.ticks.map { $0.reason ?? "" },
                      plan.ticks.map { $0.runId.flatMap { existing[$0] } ?? 0 }])  // 0 and '' stand for NULL
            try audit(s, actor, "backfill", request.flowId, ["backfill": .int(id), "from": .string(Instant.format(request.from)),
                      "to": .string(Instant.format(request.to)), "reprocess": .string(request.reprocess.rawValue),
                      "create": .int(plan.counts.create), "rerun": .int(plan.counts.rerun), "skip": .int(plan.counts.skip)], now: now)
            s.notifyAfterCommit(Self.backfillsChannel, String(id))
            return try detail(s, id: id)
        }
    }

    /// The plan of `request`; with `lock`, the flow's row is locked first (no other backfill of
    /// it is created meanwhile). `existing`: the pk of each existing run the plan names.
    private func plan(_ s: PGSession, _ request: BackfillRequest, lock: Bool) throws -> (plan: BackfillPlan, existing: [String: Int]) {
        let flowId = request.flowId
        guard request.from <= request.to else {
            throw BadRequest("backfill: `from` \(Instant.format(request.from)) is after `to` \(Instant.format(request.to))")
        }
        guard request.maxActiveRuns > 0 else { throw BadRequest("backfill: `maxActiveRuns` must be at least 1, not \(request.maxActiveRuns)") }
        guard let f = try s.query("SELECT schedule, timezone, current_version FROM flows WHERE flow_id = $1 AND is_active\(lock ? " FOR NO KEY UPDATE" : "")",
                                  [flowId]).first else {
            let known = try s.query("SELECT flow_id FROM flows WHERE is_active ORDER BY flow_id").all.compactMap { try $0.stringOrNull("flow_id") }
            throw NotFound(UnknownFlowError(id: flowId, known: known).description)
        }
        guard let cron = try f.stringOrNull("schedule") else { throw StateConflict("flow `\(flowId)` has no schedule to backfill") }
        // The conf must fit the flow's params now, not when the first run is made.
        _ = try graphs.graph(s, flow: flowId, version: f.int("current_version")).definition.resolveParams(conf: request.conf)
        if let other = try s.query("""
            SELECT id, from_date, to_date, state FROM backfills WHERE flow_id = $1 AND state IN ('running', 'paused')
              AND from_date <= $3 AND to_date >= $2 ORDER BY id LIMIT 1
            """, [flowId, request.from, request.to]).first {
            throw StateConflict("backfill \(try other.int("id")) of `\(flowId)` is \(try other.string("state")) over an overlapping range "
                                + "(\(Instant.format(try other.date("from_date"))) to \(Instant.format(try other.date("to_date")))): cancel it or let it finish first")
        }
        let compiled = try Schedule(cron: cron, timeZone: f.string("timezone")).compiled()
        var dates: [Date] = []
        var cursor = request.from.addingTimeInterval(-0.001)
        while let t = compiled.nextFire(after: cursor), t <= request.to {
            guard dates.count < Self.maxBackfillTicks else {
                throw BadRequest("backfill of `\(flowId)` covers more than \(Self.maxBackfillTicks) ticks; narrow `from`/`to`")
            }
            dates.append(t)
            cursor = t
        }
        // The runs a tick can have: the unique index's kinds (a manual run does not hold a tick).
        var runs: [Date: (id: String, pk: Int, state: String)] = [:]
        for r in try s.query("""
            SELECT id, run_id, logical_date, state FROM runs
            WHERE flow_id = $1 AND trigger_kind IN ('scheduled', 'backfill') AND logical_date BETWEEN $2 AND $3
            """, [flowId, request.from, request.to]).all {
            runs[try r.date("logical_date")] = (try r.string("run_id"), try r.int("id"), try r.string("state"))
        }
        var ticks: [BackfillTick] = [], counts = BackfillCounts(), existing: [String: Int] = [:]
        var failedRuns = 0, succeededRuns = 0
        for d in request.newestFirst ? dates.reversed() : dates {
            guard let run = runs[d] else {
                ticks.append(BackfillTick(logicalDate: d, action: "create", done: false))
                counts.create += 1
                continue
            }
            existing[run.id] = run.pk
            if run.state == "failed" { failedRuns += 1 }
            if run.state == "success" { succeededRuns += 1 }
            let (action, reason) = Self.decide(state: run.state, reprocess: request.reprocess)
            ticks.append(BackfillTick(logicalDate: d, action: action, reason: reason, runId: run.id, runState: run.state, done: action == "skip"))
            if action == "rerun" { counts.rerun += 1 } else { counts.skip += 1 }
        }
        let plan = BackfillPlan(flowId: flowId, from: request.from, to: request.to, reprocess: request.reprocess, newestFirst: request.newestFirst,
                                maxActiveRuns: request.maxActiveRuns, ticks: ticks, counts: counts,
                                reprocessCounts: ["none": 0, "failed": failedRuns, "all": failedRuns + succeededRuns])
        return (plan, existing)
    }

    /// What a backfill does with a tick whose run is in `state`, and why when it skips it.
    static func decide(state: String, reprocess: Reprocess) -> (action: String, reason: String?) {
        switch state {
        case "queued", "running": return ("skip", "its run is \(state)")
        case "success": return reprocess == .all ? ("rerun", nil) : ("skip", "its run succeeded (reprocess: all re-runs it)")
        case "failed": return reprocess == .none ? ("skip", "its run failed (reprocess: failed or all re-runs it)") : ("rerun", nil)
        default: return ("skip", "its run is \(state); a \(state) run is not re-run")
        }
    }

    /// The newest backfills first, of one flow or all, in one state or any.
    public func backfills(flowId: String? = nil, state: String? = nil, limit: Int = 100) async throws -> [BackfillRecord] {
        try await db.run { s in
            try s.query("""
                SELECT \(BackfillRecord.columns) FROM backfills b \(BackfillRecord.tickCounts)
                WHERE ($1::text IS NULL OR b.flow_id = $1) AND ($2::text IS NULL OR b.state = $2) ORDER BY b.id DESC LIMIT $3
                """, [flowId, state, limit]).all.map { try BackfillRecord(row: $0) }
        }
    }

    public func backfill(id: Int) async throws -> BackfillDetail {
        try await db.run { [self] s in try detail(s, id: id) }
    }

    private func detail(_ s: PGSession, id: Int) throws -> BackfillDetail {
        guard let b = try s.query("SELECT \(BackfillRecord.columns) FROM backfills b \(BackfillRecord.tickCounts) WHERE b.id = $1", [id]).first else {
            throw NotFound("unknown backfill \(id)")
        }
        let ticks = try s.query("""
            SELECT t.logical_date, t.action, t.reason, t.done, r.run_id, r.state FROM backfill_ticks t LEFT JOIN runs r ON r.id = t.run_pk
            WHERE t.backfill_id = $1 ORDER BY t.position
            """, [id]).all.map { r in
            BackfillTick(logicalDate: try r.date("logical_date"), action: try r.string("action"), reason: try r.stringOrNull("reason"),
                         runId: try r.stringOrNull("run_id"), runState: try r.stringOrNull("state"), done: try r.bool("done"))
        }
        return BackfillDetail(backfill: try BackfillRecord(row: b), ticks: ticks)
    }

    /// Pauses (no new runs), resumes, or cancels a backfill; cancelling also cancels its queued
    /// runs (the running ones finish). Returns the broker work of the cancelled runs.
    public func setBackfillState(id: Int, to target: String, now: Date) async throws -> (detail: BackfillDetail, work: BrokerWork) {
        try await audited { [self] s, actor in
            guard let b = try s.query("SELECT state FROM backfills WHERE id = $1 FOR UPDATE", [id]).first else {
                throw NotFound("unknown backfill \(id)")
            }
            let state = try b.string("state")
            let allowed: [String: [String]] = ["paused": ["running"], "running": ["paused"], "cancelled": ["running", "paused"]]
            guard let from = allowed[target] else { throw BadRequest("a backfill can be paused, resumed or cancelled, not set to `\(target)`") }
            guard from.contains(state) else {
                let verb = ["paused": "paused", "running": "resumed", "cancelled": "cancelled"][target]!
                throw StateConflict("backfill \(id) is \(state); only a \(from.joined(separator: " or ")) backfill can be \(verb)")
            }
            var work = BrokerWork()
            if target == "cancelled" {
                for r in try s.query("SELECT id, run_id FROM runs WHERE backfill_id = $1 AND state = 'queued' ORDER BY id FOR NO KEY UPDATE", [id]).all {
                    work.merge(try endRun(s, pk: r.int("id"), runId: r.string("run_id"), as: .cancelled, source: apiSource(actor),
                                          detail: "backfill \(id) cancelled", now: now))
                }
            }
            try s.query("UPDATE backfills SET state = $2::text, updated_at = $3::timestamptz, completed_at = CASE WHEN $2::text = 'cancelled' THEN $3::timestamptz END WHERE id = $1",
                        [id, target, now])
            try audit(s, actor, ["paused": "backfill-pause", "running": "backfill-resume", "cancelled": "backfill-cancel"][target]!, String(id), now: now)
            s.notifyAfterCommit(Self.backfillsChannel, String(id))
            return (try detail(s, id: id), work)
        }
    }

    /// Notified when a backfill is created, paused, resumed, cancelled or completed: the backfill
    /// runners LISTEN to it while no backfill runs.
    public static let backfillsChannel = "flowkit_backfills"

    /// Carries out the running backfills a step: for each (one scheduler at a time: its row is
    /// locked, SKIP LOCKED), its next ticks while it has fewer than `max_active_runs` runs queued
    /// or running — a `create` makes a queued run (which the run starter starts), a `rerun`
    /// clears the existing run. A backfill with every tick done and no run active is completed.
    /// `running` is how many running backfills this pass held (those another scheduler holds
    /// are not counted): none, and the runner can wait for `backfillsChannel`.
    public func advanceBackfills(now: Date, limit: Int = 10) async throws -> (made: Int, running: Int, work: BrokerWork) {
        try await db.run { [self] s in
            try s.transaction {
                var work = BrokerWork(), made = 0
                let running = try s.query("""
                    SELECT id, flow_id, conf, reprocess, max_active_runs FROM backfills WHERE state = 'running'
                    ORDER BY id LIMIT $1 FOR NO KEY UPDATE SKIP LOCKED
                    """, [limit]).all
                for b in running {
                    let id = try b.int("id"), flowId = try b.string("flow_id")
                    let active = try s.query("SELECT count(*) AS n FROM runs WHERE backfill_id = $1 AND state IN ('queued', 'running')", [id])
                        .single().int("n")
                    let room = try b.int("max_active_runs") - active
                    var started = 0
                    var flow: BackfillFlow?
                    if room > 0 {
                        let ticks = try s.query("""
                            SELECT t.position, t.logical_date, t.action, r.run_id FROM backfill_ticks t LEFT JOIN runs r ON r.id = t.run_pk
                            WHERE t.backfill_id = $1 AND NOT t.done ORDER BY t.position LIMIT $2
                            """, [id, room]).all
                        for t in ticks {
                            let outcome = try carryOut(s, backfill: id, flowId: flowId, conf: b.json("conf").objectValue ?? [:],
                                                       reprocess: b.enumValue("reprocess"), tick: t, flow: &flow, now: now)
                            work.merge(outcome.work)
                            if outcome.started { started += 1 }
                        }
                        made += started
                    }
                    if active + started == 0,
                       try s.query("SELECT 1 FROM backfill_ticks WHERE backfill_id = $1 AND NOT done LIMIT 1", [id]).first == nil {
                        try s.query("UPDATE backfills SET state = 'completed', completed_at = $2, updated_at = $2 WHERE id = $1", [id, now])
                        s.notifyAfterCommit(Self.backfillsChannel, String(id))
                    }
                }
                return (made, running.count, work)
            }
        }
    }

    /// One tick: its run made or re-run (`started`), or — when things changed since the plan —
    /// turned into a skip that says why.
    private func carryOut(_ s: PGSession, backfill id: Int, flowId: String, conf: [String: JSONValue], reprocess: Reprocess, tick t: PGRow,
                          flow cached: inout BackfillFlow?, now: Date) throws -> (started: Bool, work: BrokerWork) {
        let position = try t.int("position"), at = try t.date("logical_date")
        func finish(runPk: Int?, skip reason: String? = nil) throws {
            try s.query("""
                UPDATE backfill_ticks SET done = true, run_pk = coalesce($3, run_pk), action = CASE WHEN $4::text IS NULL THEN action ELSE 'skip' END,
                    reason = coalesce($4, reason) WHERE backfill_id = $1 AND position = $2
                """, [id, position, runPk, reason])
        }
        if try t.string("action") == "create" {
            // The flow as it is now (read once per backfill and pass).
            if cached == nil {
                let f = try s.query("SELECT current_version, schedule, timezone FROM flows WHERE flow_id = $1", [flowId]).single()
                let version = try f.int("current_version")
                // The flow may have changed since the plan: a conf that no longer fits its params
                // skips the tick saying why, instead of failing every pass (and every other backfill's).
                let params: Result<[String: JSONValue], ConfError>
                do { params = .success(try graphs.graph(s, flow: flowId, version: version).definition.resolveParams(conf: conf)) } catch let e as ConfError {
                    params = .failure(e)
                }
                cached = BackfillFlow(version: version, params: params,
                                      schedule: try f.stringOrNull("schedule").map { try Schedule(cron: $0, timeZone: f.string("timezone")).compiled() })
            }
            let flow = cached!, version = flow.version
            let params: [String: JSONValue]
            switch flow.params {
            case .success(let p): params = p
            case .failure(let e):
                try finish(runPk: nil, skip: "not made: the backfill's conf no longer fits the flow (\(e.message))")
                return (false, BrokerWork())
            }
            // A schedule removed since the plan: the data interval is the tick itself.
            let prev = flow.schedule?.latestFire(atOrBefore: at.addingTimeInterval(-1)) ?? at
            guard let run = try insertRun(s, flowId: flowId, version: version, kind: "backfill", conf: conf, params: params,
                                          logicalDate: at, intervalStart: prev, intervalEnd: at) else {
                let other = try s.query("""
                    SELECT id, run_id, state FROM runs WHERE flow_id = $1 AND logical_date = $2 AND trigger_kind IN ('scheduled', 'backfill')
                    """, [flowId, at]).first
                try finish(runPk: try other?.int("id"), skip: "a run for this tick was made after the plan (\(try other?.string("run_id") ?? "?"))")
                return (false, BrokerWork())
            }
            try s.query("UPDATE runs SET backfill_id = $2 WHERE id = $1", [run.id, id])
            try finish(runPk: run.id)
            return (true, BrokerWork())
        }
        // A re-run: the run must still be in the state the plan re-runs.
        guard let runId = try t.stringOrNull("run_id"),
              let r = try s.query("SELECT id, state FROM runs WHERE run_id = $1 FOR NO KEY UPDATE", [runId]).first else {
            try finish(runPk: nil, skip: "its run was deleted after the plan")
            return (false, BrokerWork())
        }
        let state = try r.string("state"), pk = try r.int("id")
        guard Self.decide(state: state, reprocess: reprocess).action == "rerun" else {
            try finish(runPk: pk, skip: "its run was \(state) when its turn came")
            return (false, BrokerWork())
        }
        // `failed`: the failed tasks and what follows them; `all` (or a failed run without a failed
        // task: ended by its timeout, or marked): every task.
        let all = try s.query("SELECT task_id FROM task_instances WHERE run_pk = $1", [pk]).all
            .map { try $0.string("task_id") }.filter { !MappedInstance.isInstance($0) }
        var work: BrokerWork
        do {
            do {
                guard reprocess == .failed else { throw StateConflict("every task") }
                work = try clearRun(s, actor: nil, runId: runId, taskIds: nil, onlyFailed: false, now: now)
            } catch is StateConflict {
                work = try clearRun(s, actor: nil, runId: runId, taskIds: all, onlyFailed: false, now: now)
            }
        } catch let e as StateConflict {
            // Refused before anything was written (tasks still in progress): skipped, saying why.
            try finish(runPk: pk, skip: "not re-run: \(e.message)")
            return (false, BrokerWork())
        }
        try s.query("UPDATE runs SET backfill_id = $2 WHERE id = $1", [pk, id])
        try finish(runPk: pk)
        return (true, work)
    }
}

/// A backfilled flow as it is when its ticks are carried out: its current version, the
/// backfill's conf resolved against its params, its schedule.
struct BackfillFlow {
    var version: Int
    var params: Result<[String: JSONValue], ConfError>
    var schedule: CompiledSchedule?
}
