public import FlowKit
public import Foundation
import PostgresClient

/// What the Airflow-compatible API (`/api/v2`, FlowServer's `AirflowRoutes`) reads beyond the
/// native API's reads: a flow's DAG fields from its definition, offset pages of runs with their
/// total (Airflow pages by offset and counts), flow versions with their creation times, and
/// assets and their events with the assets' numbers.
public struct DagRow: Sendable {
    public var flow: FlowRecord
    public var maxActiveRuns: Int
    public var maxActiveTasks: Int?
    public var catchup: Bool
    /// A task with a pool or a per-flow instance limit.
    public var hasTaskLimits: Bool
    /// Where the flow is declared (`Flows/Examples.swift:12`), when the scheduler recorded it.
    public var fileloc: String?
    public var runTimeoutSeconds: Double?
    public var params: [Param]
    public var versionCreatedAt: Date
    public var hasImportErrors: Bool
    public var lastRunState: String?
    public var hasAssetSchedule: Bool
}

/// A flow version as Airflow's `dag_versions` show it.
public struct FlowVersionInfo: Sendable {
    public var flowId: String
    public var version: Int
    public var hash: String
    public var createdAt: Date
}

/// The runs an Airflow `dagRuns` list asks for: filters, an order and an offset page.
public struct RunQuery: Sendable {
    /// The columns Airflow's filters and `order_by` name, as FlowKit's.
    public enum Column: String, Sendable, CaseIterable {
        case id = "r.id", state = "r.state", flowId = "r.flow_id", runId = "r.run_id", logicalDate = "r.logical_date"
        case startedAt = "r.started_at", endedAt = "r.ended_at", createdAt = "r.created_at"
    }
    public enum Comparison: String, Sendable { case gte = ">=", gt = ">", lte = "<=", lt = "<" }
    public var flowIds: [String]?
    public var states: [String]?
    public var kinds: [String]?
    public var ranges: [(column: Column, comparison: Comparison, date: Date)] = []
    public var orderBy: [(column: Column, descending: Bool)] = [(.id, false)]
    public var limit = 50
    public var offset = 0
    public init() {}
}

extension SchedulerStore {
    /// Every flow (active or not), or the one named, with the fields of its current definition a DAG shows.
    public func dagRows(flowId: String? = nil) async throws -> [DagRow] {
        let only: [any PGEncodable] = flowId.map { [$0] } ?? []
        return try await db.run { s in
            try s.query("""
                SELECT \(Self.flowColumns), v.created_at AS version_created_at,
                       (v.definition->>'maxActiveRuns')::int AS max_active_runs, (v.definition->>'maxActiveTasks')::int AS max_active_tasks,
                       COALESCE((v.definition->>'catchup')::boolean, false) AS catchup, (v.definition->>'runTimeoutSeconds')::float8 AS run_timeout,
                       (v.definition->'params')::text AS params, v.definition ? 'assets' AS asset_schedule,
                       EXISTS (SELECT 1 FROM jsonb_array_elements(v.definition->'tasks') t WHERE t ? 'pool' OR t ? 'maxActiveTisPerFlow') AS task_limits,
                       v.source->>'flow' AS fileloc,
                       EXISTS (SELECT 1 FROM flow_import_errors e WHERE e.flow_id = f.flow_id) AS import_errors,
                       (SELECT state FROM runs r WHERE r.flow_id = f.flow_id ORDER BY r.id DESC LIMIT 1) AS last_run_state
                FROM flows f JOIN flow_versions v ON v.flow_id = f.flow_id AND v.version = f.current_version
                \(flowId == nil ? "" : "WHERE f.flow_id = $1")
                ORDER BY f.flow_id
                """, only).all.map { r in
                DagRow(flow: try Self.flowRecord(r), maxActiveRuns: try r.intOrNull("max_active_runs") ?? 16, maxActiveTasks: try r.intOrNull("max_active_tasks"),
                       catchup: try r.bool("catchup"), hasTaskLimits: try r.bool("task_limits"), fileloc: try r.stringOrNull("fileloc"),
                       runTimeoutSeconds: try r.doubleOrNull("run_timeout"),
                       params: (try? JSONDecoder().decode([Param].self, from: Data((try r.stringOrNull("params") ?? "[]").utf8))) ?? [],
                       versionCreatedAt: try r.date("version_created_at"), hasImportErrors: try r.bool("import_errors"),
                       lastRunState: try r.stringOrNull("last_run_state"), hasAssetSchedule: try r.bool("asset_schedule"))
            }
        }
    }

    /// A page of runs by `q`, and how many runs match in all.
    public func runPage(_ q: RunQuery) async throws -> (runs: [RunRecord], total: Int) {
        var conditions: [String] = [], params: [any PGEncodable] = []
        func param(_ v: any PGEncodable) -> String { params.append(v); return "$\(params.count)" }
        if let ids = q.flowIds { conditions.append("r.flow_id = ANY(\(param(ids))::text[])") }
        if let states = q.states { conditions.append("r.state = ANY(\(param(states))::text[])") }
        if let kinds = q.kinds { conditions.append("r.trigger_kind = ANY(\(param(kinds))::text[])") }
        for r in q.ranges { conditions.append("\(r.column.rawValue) \(r.comparison.rawValue) \(param(r.date))") }
        let whereClause = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
        let order = (q.orderBy + [(.id, q.orderBy.first?.descending ?? false)])
            .map { "\($0.column.rawValue) \($0.descending ? "DESC" : "ASC") NULLS LAST" }.joined(separator: ", ")
        let countParams = params
        let page = "SELECT \(RunRecord.columns) FROM runs r \(whereClause) ORDER BY \(order) LIMIT \(param(q.limit)) OFFSET \(param(q.offset))"
        let pageParams = params
        return try await db.run { s in
            let found = try s.queries([(page, pageParams), ("SELECT count(*) AS n FROM runs r \(whereClause)", countParams)])
            return (try found[0].decode(RunRecord.self), try found[1].single().int("n"))
        }
    }

    /// The definition of one version of a flow (versions never change: cached with the graphs).
    public func definition(flowId: String, version: Int) async throws -> FlowDefinition {
        if let g = graphs.cached(flow: flowId, version: version) { return g.definition }
        return try await db.run { s in try self.graphs.graph(s, flow: flowId, version: version).definition }
    }

    /// The versions of these flows with their hashes and creation times.
    public func flowVersions(_ flowIds: [String]) async throws -> [String: [Int: FlowVersionInfo]] {
        try await db.run { s in
            var out: [String: [Int: FlowVersionInfo]] = [:]
            for r in try s.query("SELECT flow_id, version, hash, created_at FROM flow_versions WHERE flow_id = ANY($1::text[])", [flowIds]).all {
                let v = FlowVersionInfo(flowId: try r.string("flow_id"), version: try r.int("version"), hash: try r.string("hash"),
                                        createdAt: try r.date("created_at"))
                out[v.flowId, default: [:]][v.version] = v
            }
            return out
        }
    }

    /// Each asset's number by its URI.
    public func assetNumbers() async throws -> [String: Int] {
        try await db.run { s in
            Dictionary(uniqueKeysWithValues: try s.query("SELECT uri, id FROM assets").all.map { (try $0.string("uri"), try $0.int("id")) })
        }
    }

    /// A page of asset events (of one asset when `uri` is set), oldest first unless `newestFirst`,
    /// with how many match in all.
    public func assetEventPage(uri: String?, newestFirst: Bool, limit: Int, offset: Int) async throws -> (events: [AssetEventRecord], total: Int) {
        try await db.run { s in
            let found = try s.queries([
                ("""
                 SELECT id, uri, source, run_id, task_id, extra::text AS extra, at FROM asset_events
                 WHERE ($1::text IS NULL OR uri = $1) ORDER BY id \(newestFirst ? "DESC" : "ASC") LIMIT $2 OFFSET $3
                 """, [uri, limit, offset]),
                ("SELECT count(*) AS n FROM asset_events WHERE ($1::text IS NULL OR uri = $1)", [uri]),
            ])
            return (try found[0].all.map { r in
                AssetEventRecord(id: try r.int("id"), uri: try r.string("uri"), source: try r.string("source"), runId: try r.stringOrNull("run_id"),
                                 taskId: try r.stringOrNull("task_id"), extra: try r.json("extra"), at: try r.date("at"))
            }, try found[1].single().int("n"))
        }
    }
}
