import CeleryProtocol
public import FlowKit
public import Foundation
import PostgresClient

/// Flows and their versions: registration (a new version when a definition changes), pause, reads.
extension SchedulerStore {
    /// Upserts the flows this binary was built with; a changed flow gets a new version; flows
    /// missing from `flows` become inactive (never deleted). Returns the flows that got a new version.
    @discardableResult
    public func registerFlows(_ flows: [Flow], importErrors: [FlowImportError] = [], reportedBy: String = "", now: Date) async throws -> [String] {
        let defs = try flows.map { f -> (FlowDefinition, String, String, Date?) in
            let d = FlowDefinition(f)
            let next = try f.schedule.map { try $0.compiled().nextFire(after: now) } ?? nil
            return (d, try d.json(), try d.contentHash(), next)
        }
        return try await db.run { s in
            try s.transaction {
                var changed: [String] = []
                try s.query("SELECT pg_advisory_xact_lock($1)", [AdvisoryLock.registration])
                try self.checkPools(s, defs.map(\.0))
                for (d, json, hash, next) in defs {
                    let cur = try s.query("""
                        SELECT f.current_version, v.hash, f.schedule, f.timezone FROM flows f
                        JOIN flow_versions v ON v.flow_id = f.flow_id AND v.version = f.current_version
                        WHERE f.flow_id = $1
                        """, [d.id]).first
                    let schedule = d.schedule?.cron
                    let tz = d.schedule?.timeZone ?? "UTC"
                    if let cur {
                        let scheduleChanged = cur.string("schedule") != schedule || cur.string("timezone") != tz
                        var version = cur.int("current_version")!
                        if cur.string("hash") != hash {
                            version += 1
                            try s.query("INSERT INTO flow_versions (flow_id, version, hash, definition) VALUES ($1, $2, $3, $4::jsonb) ON CONFLICT (flow_id, hash) DO NOTHING",
                                        [d.id, version, hash, json])
                            // A flow changed back to an earlier form reuses that version.
                            version = try s.query("SELECT version FROM flow_versions WHERE flow_id = $1 AND hash = $2", [d.id, hash]).first!.int("version")!
                            changed.append(d.id)
                        }
                        try s.query("""
                            UPDATE flows SET current_version = $2, is_active = true, schedule = $3, timezone = $4,
                                catchup = $5, max_active_runs = $6, updated_at = now(),
                                next_tick = CASE WHEN $3::text IS NULL THEN NULL
                                                 WHEN $7 OR next_tick IS NULL THEN $8::timestamptz ELSE next_tick END
                            WHERE flow_id = $1
                            """, [d.id, version, schedule, tz, d.catchup, d.maxActiveRuns, scheduleChanged, next])
                    } else {
                        try s.query("""
                            INSERT INTO flows (flow_id, current_version, schedule, timezone, catchup, max_active_runs, next_tick)
                            VALUES ($1, 1, $2, $3, $4, $5, $6)
                            """, [d.id, schedule, tz, d.catchup, d.maxActiveRuns, next])
                        try s.query("INSERT INTO flow_versions (flow_id, version, hash, definition) VALUES ($1, 1, $2, $3::jsonb)",
                                    [d.id, hash, json])
                        changed.append(d.id)
                    }
                }
                try s.query("UPDATE flows SET is_active = false, updated_at = now() WHERE NOT (flow_id = ANY($1::text[])) AND is_active",
                            [defs.map(\.0.id)])
                try self.registerAssets(s, defs.map(\.0))
                try self.registerFlowSubscriptions(s, defs.map(\.0))
                try s.query("DELETE FROM flow_import_errors")
                if !importErrors.isEmpty {
                    try s.query("""
                        INSERT INTO flow_import_errors (flow_id, message, reported_by, at)
                        SELECT f, m, $3, $4 FROM unnest($1::text[], $2::text[]) AS u(f, m) ON CONFLICT (flow_id) DO NOTHING
                        """, [importErrors.map(\.flowId), importErrors.map(\.message), reportedBy, now])
                }
                return changed
            }
        }
    }

    public func setPaused(flowId: String, paused: Bool) async throws -> FlowRecord {
        let n = try await db.run { s in
            let n = try s.query("UPDATE flows SET is_paused = $2, updated_at = now() WHERE flow_id = $1", [flowId, paused]).affectedRows
            if n > 0 && !paused { s.notifyAfterCommit("flowkit_runs", flowId) }
            return n
        }
        if n == 0 { throw NotFound("unknown flow `\(flowId)`") }
        return try await flow(flowId, withDefinition: false)
    }

    /// Flows the schedulers' binaries carry but could not register, with why.
    public func importErrors() async throws -> [ImportErrorRecord] {
        try await db.run { s in
            try s.query("SELECT flow_id, message, reported_by, at FROM flow_import_errors ORDER BY flow_id").all.map {
                ImportErrorRecord(flowId: $0.string("flow_id")!, message: $0.string("message")!, reportedBy: $0.string("reported_by")!, at: $0.date("at")!)
            }
        }
    }

    public func flows() async throws -> [FlowRecord] {
        try await db.run { s in
            try s.query("""
                SELECT f.flow_id, f.current_version, v.hash, f.is_active, f.is_paused, f.schedule, f.timezone, f.next_tick,
                       v.definition->>'description' AS description, v.definition->>'owner' AS owner, (v.definition->'tags')::text AS tags,
                       lr.recent::text AS recent, lr.recent->0->>'runId' AS latest_run_id, lr.recent->0->>'state' AS latest_run_state,
                       to_timestamp((lr.recent->0->>'at')::float8) AS latest_run_at
                FROM flows f JOIN flow_versions v ON v.flow_id = f.flow_id AND v.version = f.current_version
                LEFT JOIN LATERAL (SELECT jsonb_agg(jsonb_build_object('runId', run_id, 'state', state, 'at', extract(epoch FROM at)) ORDER BY id DESC) AS recent
                                   FROM (SELECT id, run_id, state, COALESCE(ended_at, started_at, created_at) AS at FROM runs
                                         WHERE flow_id = f.flow_id ORDER BY id DESC LIMIT 10) x) lr ON true
                ORDER BY f.flow_id
                """).all.map { Self.flowRecord($0) }
        }
    }

    static func flowRecord(_ r: PGRow) -> FlowRecord {
        FlowRecord(flowId: r.string("flow_id")!, version: r.int("current_version")!, hash: r.string("hash")!,
                   isActive: r.bool("is_active")!, isPaused: r.bool("is_paused")!, schedule: r.string("schedule"),
                   timezone: r.string("timezone")!, nextRunAt: r.date("next_tick"),
                   description: r.string("description") ?? "", owner: r.string("owner") ?? "",
                   tags: ((try? JSONValue.parse(r.string("tags") ?? "[]"))?.arrayValue ?? []).compactMap(\.stringValue),
                   definition: nil, latestRuns: nil,
                   latestRun: r.string("latest_run_id").map { LatestRun(runId: $0, state: r.string("latest_run_state")!, at: r.date("latest_run_at")!) },
                   recentRuns: r.string("recent").map { text in
                       ((try? JSONValue.parse(text))?.arrayValue ?? []).compactMap { j in
                           guard let id = j["runId"]?.stringValue, let st = j["state"]?.stringValue,
                                 let at = j["at"]?.doubleValue.map({ Date(timeIntervalSince1970: $0) }) else { return nil }
                           return LatestRun(runId: id, state: st, at: at)
                       }
                   })
    }

    /// A flow's grid: its tasks in declaration order and its last `limit` runs, with each task
    /// instance's state and duration, in two statements whatever the size (mapped instances are
    /// counted on their mapped task's cell). A dashboard draws it without a call per run.
    public func grid(flowId: String, limit: Int, state: String? = nil) async throws -> FlowGrid {
        try await db.run { [self] s in
            guard let f = try s.query("SELECT current_version FROM flows WHERE flow_id = $1", [flowId]).first else {
                let known = try s.query("SELECT flow_id FROM flows WHERE is_active ORDER BY flow_id").all.compactMap { $0.string("flow_id") }
                throw NotFound(UnknownFlowError(id: flowId, known: known).description)
            }
            let graph = try graphs.graph(s, flow: flowId, version: f.int("current_version")!)
            let runs = try s.query("""
                SELECT \(RunRecord.columns) FROM runs r WHERE r.flow_id = $1 AND ($3::text IS NULL OR r.state = $3) ORDER BY r.id DESC LIMIT $2
                """, [flowId, limit, state]).all.map(RunRecord.init)
            var cells: [String: [String: GridCell]] = [:]
            if !runs.isEmpty {
                let rows = try s.query("""
                    SELECT t.run_pk, COALESCE(t.map_parent, t.task_id) AS task_id, t.map_parent IS NOT NULL AS instance, t.state, t.try_number,
                           EXTRACT(EPOCH FROM (COALESCE(t.ended_at, now()) - t.started_at))::float8 AS seconds
                    FROM task_instances t WHERE t.run_pk = ANY($1::bigint[])
                    """, [runs.map(\.id)]).all
                let byPk = Dictionary(uniqueKeysWithValues: runs.map { ($0.id, $0.runId) })
                for r in rows {
                    guard let run = byPk[r.int("run_pk")!] else { continue }
                    let task = r.string("task_id")!
                    if r.bool("instance") == true {
                        cells[run, default: [:]][task, default: GridCell(state: "pending", tryNumber: 0, seconds: nil)].instances[r.string("state")!, default: 0] += 1
                    } else {
                        let old = cells[run]?[task]
                        cells[run, default: [:]][task] = GridCell(state: r.string("state")!, tryNumber: r.int("try_number")!,
                                                                  seconds: r.double("seconds"), instances: old?.instances ?? [:])
                    }
                }
            }
            return FlowGrid(flowId: flowId, version: f.int("current_version")!,
                            tasks: graph.definition.tasks.map { GridTask(id: $0.id, kind: $0.kind, upstream: $0.upstream, mapped: $0.mapOver != nil) },
                            runs: runs, cells: cells)
        }
    }

    public func flow(_ flowId: String, withDefinition: Bool = true) async throws -> FlowRecord {
        try await db.run { s in
            guard let r = try s.query("""
                SELECT f.flow_id, f.current_version, v.hash, f.is_active, f.is_paused, f.schedule, f.timezone, f.next_tick,
                       v.definition->>'description' AS description, v.definition->>'owner' AS owner, (v.definition->'tags')::text AS tags,
                       v.definition::text AS definition
                FROM flows f JOIN flow_versions v ON v.flow_id = f.flow_id AND v.version = f.current_version WHERE f.flow_id = $1
                """, [flowId]).first else {
                let known = try s.query("SELECT flow_id FROM flows WHERE is_active ORDER BY flow_id").all.compactMap { $0.string("flow_id") }
                throw NotFound(UnknownFlowError(id: flowId, known: known).description)
            }
            var rec = Self.flowRecord(r)
            if withDefinition {
                rec.definition = try? FlowDefinition.decode(r.string("definition")!)
                rec.latestRuns = try s.query("SELECT \(RunRecord.columns) FROM runs r WHERE r.flow_id = $1 ORDER BY r.id DESC LIMIT 10",
                                             [flowId]).all.map(RunRecord.init)
            }
            return rec
        }
    }
}
