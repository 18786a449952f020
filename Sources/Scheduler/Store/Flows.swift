import CeleryProtocol
public import FlowKit
public import Foundation
import PostgresClient

/// Flows and their versions: registration (a new version when a definition changes), pause, reads.
extension SchedulerStore {
    /// Registers the flows this binary was built with: a definition never seen gets a new
    /// version, and the scheduler `reportedBy` is recorded as carrying these versions. Then each
    /// flow's current version becomes the newest one a live scheduler carries, and a flow no live
    /// scheduler carries becomes inactive (never deleted) — so a scheduler started from an older
    /// binary during a rolling upgrade neither rolls a flow back nor deactivates the flows only
    /// the newer binary has. A registration by no scheduler (`reportedBy` empty: tests, tools)
    /// counts as one that carries `flows`. Returns the flows that got a new version.
    @discardableResult
    public func registerFlows(_ flows: [Flow], importErrors: [FlowImportError] = [], reportedBy: String = "",
                              host: String = ProcessInfo.processInfo.hostName, now: Date) async throws -> [String] {
        let defs = try flows.map { f -> (FlowDefinition, String, String) in
            let d = FlowDefinition(f)
            return (d, try d.json(), try d.contentHash())
        }
        // Where each flow and task is declared: kept beside the version, outside its definition
        // and hash, so that moving code makes no new version (its positions are refreshed).
        let sources = Dictionary(flows.map { ($0.id, $0.sourceLocations.compactJSON) }, uniquingKeysWith: { a, _ in a })
        return try await db.run { s in
            try s.transaction {
                var added: [String] = []
                var carried: [String: Int] = [:]
                try s.query("SELECT pg_advisory_xact_lock($1)", [AdvisoryLock.registration])
                try self.checkPools(s, defs.map(\.0))
                for (d, json, hash) in defs {
                    if let v = try s.query("SELECT version FROM flow_versions WHERE flow_id = $1 AND hash = $2", [d.id, hash]).first?.intOrNull("version") {
                        carried[d.id] = v
                        continue
                    }
                    let next = try s.query("SELECT COALESCE(max(version), 0) + 1 AS v FROM flow_versions WHERE flow_id = $1", [d.id]).single().int("v")
                    if next == 1 {
                        try s.query("INSERT INTO flows (flow_id, current_version, is_active) VALUES ($1, 1, false) ON CONFLICT DO NOTHING", [d.id])
                    }
                    try s.query("INSERT INTO flow_versions (flow_id, version, hash, definition, source) VALUES ($1, $2, $3, $4::jsonb, $5::jsonb)",
                                [d.id, next, hash, json, sources[d.id]])
                    carried[d.id] = next
                    added.append(d.id)
                }
                let kept = carried.filter { !added.contains($0.key) }
                if !kept.isEmpty {
                    try s.query("""
                        UPDATE flow_versions v SET source = u.s::jsonb FROM unnest($1::text[], $2::int[], $3::text[]) AS u(f, ver, s)
                        WHERE v.flow_id = u.f AND v.version = u.ver AND v.source IS DISTINCT FROM u.s::jsonb
                        """, [Array(kept.keys), kept.keys.map { kept[$0]! }, kept.keys.map { sources[$0] ?? "{}" }])
                }
                if !reportedBy.isEmpty {
                    try s.query("""
                        INSERT INTO schedulers (name, host, started_at, heartbeat_at, flows) VALUES ($1, $2, $3, $3, $4::jsonb)
                        ON CONFLICT (name) DO UPDATE SET flows = EXCLUDED.flows, heartbeat_at = EXCLUDED.heartbeat_at, host = EXCLUDED.host
                        """, [reportedBy, host, now, JSONValue.object(carried.mapValues { .int($0) }).compactJSON])
                }
                let switched = try self.electFlowVersions(s, now: now, carriedBySelf: carried)
                // Assets and flow-to-flow subscriptions follow the current definitions.
                let touched = Array(Set(defs.map(\.0.id)).union(switched.map(\.flowId)))
                let current = try s.query("""
                    SELECT v.definition::text AS d FROM flows f JOIN flow_versions v ON v.flow_id = f.flow_id AND v.version = f.current_version
                    WHERE f.flow_id = ANY($1::text[]) AND f.is_active
                    """, [touched]).all.compactMap { r in let d = try r.string("d"); return try? FlowDefinition.decode(d) }
                try self.registerAssets(s, current)
                try self.registerFlowSubscriptions(s, current)
                try s.query("DELETE FROM flow_import_errors")
                if !importErrors.isEmpty {
                    try s.query("""
                        INSERT INTO flow_import_errors (flow_id, message, reported_by, at)
                        SELECT f, m, $3, $4 FROM unnest($1::text[], $2::text[]) AS u(f, m) ON CONFLICT (flow_id) DO NOTHING
                        """, [importErrors.map(\.flowId), importErrors.map(\.message), reportedBy, now])
                }
                return added
            }
        }
    }

    /// How long a scheduler's carried versions count after its last heartbeat.
    public static let carrierWindow: Double = 30

    /// One flow whose current version or activity an election changed.
    public struct VersionSwitch: Sendable, Equatable, CustomStringConvertible {
        public var flowId: String
        public var from: Int?
        /// The new current version; nil when the flow became inactive.
        public var to: Int?
        public var description: String {
            guard let to else { return "flow `\(flowId)` is inactive: no running scheduler carries it" }
            return from.map { "flow `\(flowId)`: version \($0) → \(to), the newest a running scheduler carries" } ?? "flow `\(flowId)` is active at version \(to)"
        }
    }

    /// Re-elects every flow's current version (what the leader does periodically, so that a flow
    /// goes back to the newest version still carried once the schedulers of a newer one stop).
    /// The caller, scheduler `scheduler`, is alive: its own heartbeat is refreshed first, so
    /// that a late heartbeat (after a database restart) never deactivates the flows it carries.
    public func electFlowVersions(now: Date, scheduler: String) async throws -> [VersionSwitch] {
        try await db.run { s in
            try s.transaction {
                try s.query("SELECT pg_advisory_xact_lock($1)", [AdvisoryLock.registration])
                try s.query("UPDATE schedulers SET heartbeat_at = GREATEST(heartbeat_at, $2) WHERE name = $1", [scheduler, now])
                return try self.electFlowVersions(s, now: now, carriedBySelf: [:])
            }
        }
    }

    /// Flags running runs with tasks queued longer than `after` seconds that no live worker can
    /// take — none carries the run's flow version, or none consumes the task's queue — and
    /// clears the flag of runs that can go on again. Returns the runs whose flag changed, with
    /// the new reason (nil: cleared).
    public func flagStalledRuns(now: Date, after: Double, workerWindow: Double) async throws -> [(runId: String, reason: String?)] {
        try await db.run { s in
            let rows = try s.query("""
                WITH waiting AS (
                    SELECT t.run_pk, t.queue FROM task_instances t
                    WHERE t.state = 'queued' AND t.executor = 'flowkit' AND t.queued_at < $1
                    GROUP BY t.run_pk, t.queue LIMIT 5000
                ), live AS (
                    SELECT name, queues, flows, import_errors FROM workers WHERE state = 'online' AND heartbeat_at > $2
                )
                SELECT r.id, r.run_id, r.flow_id, r.flow_version, v.hash, w.queue, r.stalled_reason,
                       (SELECT count(*) FROM live WHERE w.queue = ANY(live.queues)) AS on_queue,
                       (SELECT count(*) FROM live WHERE w.queue = ANY(live.queues) AND (live.flows IS NULL OR live.flows->>r.flow_id = v.hash)) AS able,
                       (SELECT string_agg(DISTINCT COALESCE('version ' || ov.version::text, 'an unregistered version ' || left(live.flows->>r.flow_id, 12)), ', ')
                        FROM live LEFT JOIN flow_versions ov ON ov.flow_id = r.flow_id AND ov.hash = live.flows->>r.flow_id
                        WHERE w.queue = ANY(live.queues) AND live.flows ? r.flow_id) AS others,
                       (SELECT string_agg(format('on worker `%s` it could not be loaded: %s', live.name, live.import_errors->>r.flow_id), '; ' ORDER BY live.name)
                        FROM live WHERE w.queue = ANY(live.queues) AND live.import_errors ? r.flow_id) AS broken
                FROM waiting w JOIN runs r ON r.id = w.run_pk JOIN flow_versions v ON v.flow_id = r.flow_id AND v.version = r.flow_version
                WHERE r.state = 'running'
                ORDER BY r.id, w.queue
                """, [now.addingTimeInterval(-after), now.addingTimeInterval(-workerWindow)]).all
            var reasons: [Int: (runId: String, old: String?, new: String)] = [:]
            for r in rows where try r.intOrNull("able") == 0 {
                let pk = try r.int("id"), queue = try r.string("queue"), flow = try r.string("flow_id")
                guard reasons[pk] == nil else { continue }
                let reason: String
                if try r.intOrNull("on_queue") == 0 {
                    reason = "no live worker consumes queue `\(queue)`: start one with `flowctl worker --queues \(queue)`"
                } else {
                    let carry = try r.stringOrNull("others").map { "carry \($0)" } ?? "do not carry the flow"
                    let broken = try r.stringOrNull("broken").map { " (\($0))" } ?? ""
                    reason = "no live worker has version \(try r.int("flow_version")) of flow `\(flow)` (\(try r.string("hash").prefix(12))): "
                        + "the workers on queue `\(queue)` \(carry)\(broken); start a worker built with that version, or cancel the run"
                }
                reasons[pk] = (try r.string("run_id"), try r.stringOrNull("stalled_reason"), reason)
            }
            var changed: [(runId: String, reason: String?)] = []
            for (pk, x) in reasons.sorted(by: { $0.key < $1.key }) where x.old != x.new {
                try s.query("UPDATE runs SET stalled_reason = $2 WHERE id = $1", [pk, x.new])
                self.announceChange(s, runPk: pk)
                changed.append((x.runId, x.new))
            }
            for r in try s.query("UPDATE runs SET stalled_reason = NULL WHERE stalled_reason IS NOT NULL AND NOT (id = ANY($1::bigint[])) RETURNING id, run_id",
                                 [Array(reasons.keys)]).all {
                self.announceChange(s, runPk: try r.int("id"))
                changed.append((try r.string("run_id"), nil))
            }
            return changed
        }
    }

    func electFlowVersions(_ s: PGSession, now: Date, carriedBySelf: [String: Int]) throws -> [VersionSwitch] {
        let rows = try s.query("""
            WITH carried AS (
                SELECT e.key AS flow_id, e.value::int AS version FROM schedulers sc, jsonb_each_text(sc.flows) e
                WHERE sc.flows IS NOT NULL AND sc.heartbeat_at > $1
                UNION ALL SELECT * FROM unnest($2::text[], $3::int[])
            ), best AS (SELECT flow_id, max(version) AS version FROM carried GROUP BY flow_id)
            SELECT f.flow_id, f.current_version, f.is_active, b.version AS elected, v.definition::text AS definition
            FROM flows f LEFT JOIN best b ON b.flow_id = f.flow_id
            LEFT JOIN flow_versions v ON v.flow_id = f.flow_id AND v.version = b.version
            WHERE (b.version IS NULL AND f.is_active) OR (b.version IS NOT NULL AND (NOT f.is_active OR f.current_version <> b.version))
            ORDER BY f.flow_id
            """, [now.addingTimeInterval(-Self.carrierWindow), Array(carriedBySelf.keys), Array(carriedBySelf.keys).map { carriedBySelf[$0]! }]).all
        var out: [VersionSwitch] = []
        for r in rows {
            let id = try r.string("flow_id")
            guard let elected = try r.intOrNull("elected"), let text = try r.stringOrNull("definition") else {
                try s.query("UPDATE flows SET is_active = false, updated_at = now() WHERE flow_id = $1", [id])
                out.append(VersionSwitch(flowId: id, from: try r.intOrNull("current_version"), to: nil))
                continue
            }
            let d = try FlowDefinition.decode(text)
            let next = try d.schedule.map { try $0.compiled().nextFire(after: now) } ?? nil
            try s.query("""
                UPDATE flows SET current_version = $2, is_active = true, schedule = $3, timezone = $4,
                    catchup = $5, max_active_runs = $6, updated_at = now(),
                    next_tick = CASE WHEN $3::text IS NULL THEN NULL
                                     WHEN schedule IS DISTINCT FROM $3::text OR timezone <> $4 OR next_tick IS NULL THEN $7::timestamptz
                                     ELSE next_tick END
                WHERE flow_id = $1
                """, [id, elected, d.schedule?.cron, d.schedule?.timeZone ?? "UTC", d.catchup, d.maxActiveRuns, next])
            s.notifyAfterCommit("flowkit_runs", id)
            out.append(VersionSwitch(flowId: id, from: try r.boolOrNull("is_active") == true ? try r.intOrNull("current_version") : nil, to: elected))
        }
        return out
    }

    public func setPaused(flowId: String, paused: Bool) async throws -> FlowRecord {
        let n = try await audited { s, actor in
            let n = try s.query("UPDATE flows SET is_paused = $2, updated_at = now() WHERE flow_id = $1", [flowId, paused]).affectedRows
            if n > 0 && !paused { s.notifyAfterCommit("flowkit_runs", flowId) }
            if n > 0 { try self.audit(s, actor, paused ? "pause" : "unpause", flowId, now: self.clock.now()) }
            return n
        }
        if n == 0 { throw NotFound("unknown flow `\(flowId)`") }
        return try await flow(flowId, withDefinition: false)
    }

    /// Flows the schedulers' binaries carry but could not register, with why.
    public func importErrors() async throws -> [ImportErrorRecord] {
        try await db.run { s in
            try s.query("SELECT flow_id, message, reported_by, at FROM flow_import_errors ORDER BY flow_id").all.map {
                ImportErrorRecord(flowId: try $0.string("flow_id"), message: try $0.string("message"), reportedBy: try $0.string("reported_by"), at: try $0.date("at"))
            }
        }
    }

    public func flows() async throws -> [FlowRecord] {
        try await db.run { s in
            try s.query("""
                SELECT \(Self.flowColumns),
                       lr.recent::text AS recent, lr.recent->0->>'runId' AS latest_run_id, lr.recent->0->>'state' AS latest_run_state,
                       to_timestamp((lr.recent->0->>'at')::float8) AS latest_run_at
                FROM flows f JOIN flow_versions v ON v.flow_id = f.flow_id AND v.version = f.current_version
                LEFT JOIN LATERAL (SELECT jsonb_agg(jsonb_build_object('runId', run_id, 'state', state, 'at', extract(epoch FROM at)) ORDER BY id DESC) AS recent
                                   FROM (SELECT id, run_id, state, COALESCE(ended_at, started_at, created_at) AS at FROM runs
                                         WHERE flow_id = f.flow_id ORDER BY id DESC LIMIT 10) x) lr ON true
                ORDER BY f.flow_id
                """).all.map { try Self.flowRecord($0) }
        }
    }

    /// What `flowRecord` reads (`f` is the flow, `v` its current version).
    static let flowColumns = """
        f.flow_id, f.current_version, v.hash, f.is_active, f.is_paused, f.schedule, f.timezone, f.next_tick,
        v.definition->>'description' AS description, v.definition->>'owner' AS owner, (v.definition->'tags')::text AS tags,
        (SELECT string_agg(a, ', ') FROM jsonb_array_elements_text(v.definition->'assets') a) AS trigger_assets,
        v.definition ? 'webhook' AS trigger_webhook,
        (SELECT string_agg(a->>'flow', ', ') FROM jsonb_array_elements(v.definition->'after') a) AS trigger_after
        """

    static func flowRecord(_ r: PGRow) throws(PGDecodingError) -> FlowRecord {
        let active = try r.bool("is_active")
        // The list's statement reads the recent runs; the detail's does not.
        let recent = try !r.has("recent") ? nil : r.jsonOrNull("recent")?.arrayValue?.compactMap { j -> LatestRun? in
            guard let id = j["runId"]?.stringValue, let st = j["state"]?.stringValue,
                  let at = j["at"]?.doubleValue.map({ Date(timeIntervalSince1970: $0) }) else { return nil }
            return LatestRun(runId: id, state: st, at: at)
        }
        var latest: LatestRun?
        if r.has("latest_run_id"), let id = try r.stringOrNull("latest_run_id") {
            latest = LatestRun(runId: id, state: try r.string("latest_run_state"), at: try r.date("latest_run_at"))
        }
        let triggers = [try r.stringOrNull("trigger_assets").map { "assets: \($0)" },
                        try r.boolOrNull("trigger_webhook") == true ? "webhook" : nil,
                        try r.stringOrNull("trigger_after").map { "after: \($0)" }].compactMap { $0 }
        return FlowRecord(
            flowId: try r.string("flow_id"), version: try r.int("current_version"), hash: try r.string("hash"),
            isActive: active, isPaused: try r.bool("is_paused"), schedule: try r.stringOrNull("schedule"),
            timezone: try r.string("timezone"),
            nextRunAt: active ? try r.dateOrNull("next_tick") : nil,  // an inactive flow runs no more
            description: try r.stringOrNull("description") ?? "", owner: try r.stringOrNull("owner") ?? "",
            tags: try r.jsonOrNull("tags")?.arrayValue?.compactMap(\.stringValue) ?? [],
            definition: nil, latestRuns: nil, latestRun: latest, recentRuns: recent,
            triggers: triggers.isEmpty ? nil : triggers)
    }

    /// A flow's grid: its tasks in declaration order and its last `limit` runs, with each task
    /// instance's state and duration, in two statements whatever the size (mapped instances are
    /// counted on their mapped task's cell). A dashboard draws it without a call per run.
    public func grid(flowId: String, limit: Int, state: String? = nil) async throws -> FlowGrid {
        try await db.run { [self] s in
            guard let f = try s.query("SELECT current_version FROM flows WHERE flow_id = $1", [flowId]).first else {
                let known = try s.query("SELECT flow_id FROM flows WHERE is_active ORDER BY flow_id").all.compactMap { try $0.stringOrNull("flow_id") }
                throw NotFound(UnknownFlowError(id: flowId, known: known).description)
            }
            let graph = try graphs.graph(s, flow: flowId, version: f.int("current_version"))
            let runs = try s.query("""
                SELECT \(RunRecord.columns) FROM runs r WHERE r.flow_id = $1 AND ($3::text IS NULL OR r.state = $3) ORDER BY r.id DESC LIMIT $2
                """, [flowId, limit, state]).decode(RunRecord.self)
            var cells: [String: [String: GridCell]] = [:]
            if !runs.isEmpty {
                let rows = try s.query("""
                    SELECT t.run_pk, COALESCE(t.map_parent, t.task_id) AS task_id, t.map_parent IS NOT NULL AS instance, t.state, t.try_number,
                           EXTRACT(EPOCH FROM (COALESCE(t.ended_at, now()) - t.started_at))::float8 AS seconds
                    FROM task_instances t WHERE t.run_pk = ANY($1::bigint[])
                    """, [runs.map(\.id)]).all
                let byPk = Dictionary(uniqueKeysWithValues: runs.map { ($0.id, $0.runId) })
                for r in rows {
                    guard let run = byPk[try r.int("run_pk")] else { continue }
                    let task = try r.string("task_id")
                    if try r.boolOrNull("instance") == true {
                        cells[run, default: [:]][task, default: GridCell(state: "pending", tryNumber: 0, seconds: nil)].instances[try r.string("state"), default: 0] += 1
                    } else {
                        let old = cells[run]?[task]
                        cells[run, default: [:]][task] = GridCell(state: try r.string("state"), tryNumber: try r.int("try_number"),
                                                                  seconds: try r.doubleOrNull("seconds"), instances: old?.instances ?? [:])
                    }
                }
            }
            return FlowGrid(flowId: flowId, version: try f.int("current_version"),
                            tasks: graph.definition.tasks.map { GridTask(id: $0.id, kind: $0.kind, upstream: $0.upstream, mapped: $0.mapOver != nil) },
                            runs: runs, cells: cells)
        }
    }

    public func flow(_ flowId: String, withDefinition: Bool = true) async throws -> FlowRecord {
        try await db.run { s in
            guard let r = try s.query("""
                SELECT \(Self.flowColumns),
                       v.definition::text AS definition, v.source::text AS source
                FROM flows f JOIN flow_versions v ON v.flow_id = f.flow_id AND v.version = f.current_version WHERE f.flow_id = $1
                """, [flowId]).first else {
                let known = try s.query("SELECT flow_id FROM flows WHERE is_active ORDER BY flow_id").all.compactMap { try $0.stringOrNull("flow_id") }
                throw NotFound(UnknownFlowError(id: flowId, known: known).description)
            }
            var rec = try Self.flowRecord(r)
            if withDefinition {
                let definition = try r.string("definition")
                rec.definition = try? FlowDefinition.decode(definition)
                if let d = rec.definition { rec.needs = try self.needs(s, of: d) }
                rec.source = try r.jsonOrNull("source")
                rec.latestRuns = try s.query("SELECT \(RunRecord.columns) FROM runs r WHERE r.flow_id = $1 ORDER BY r.id DESC LIMIT 10",
                                             [flowId]).decode(RunRecord.self)
            }
            return rec
        }
    }
}
