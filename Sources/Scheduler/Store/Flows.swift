import CeleryProtocol
public import FlowKit
public import Foundation
import PostgresClient

/// Flows and their versions: registration (a new version when a definition changes), pause, reads.
extension SchedulerStore {
    /// Upserts the flows this binary was built with; a changed flow gets a new version; flows
    /// missing from `flows` become inactive (never deleted). Returns the flows that got a new version.
    @discardableResult
    public func registerFlows(_ flows: [Flow], now: Date) async throws -> [String] {
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

    public func flows() async throws -> [FlowRecord] {
        try await db.run { s in
            try s.query("""
                SELECT f.flow_id, f.current_version, v.hash, f.is_active, f.is_paused, f.schedule, f.timezone, f.next_tick,
                       v.definition->>'description' AS description, v.definition->>'owner' AS owner, (v.definition->'tags')::text AS tags,
                       lr.run_id AS latest_run_id, lr.state AS latest_run_state, lr.at AS latest_run_at
                FROM flows f JOIN flow_versions v ON v.flow_id = f.flow_id AND v.version = f.current_version
                LEFT JOIN LATERAL (SELECT run_id, state, COALESCE(ended_at, started_at, created_at) AS at FROM runs
                                   WHERE flow_id = f.flow_id ORDER BY id DESC LIMIT 1) lr ON true
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
                   latestRun: r.string("latest_run_id").map { LatestRun(runId: $0, state: r.string("latest_run_state")!, at: r.date("latest_run_at")!) })
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
