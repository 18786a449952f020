public import FlowKit
public import Foundation
import PostgresClient

/// One of the last failed runs, with the first task that failed and its error.
public struct RecentFailure: Codable, Sendable {
    public var runId: String
    public var flowId: String
    public var triggerKind: String
    public var logicalDate: Date
    public var endedAt: Date?
    public var taskId: String?
    public var error: String?
}

/// `GET /api/v1/overview`: what the dashboard's home shows beside the lists it reads elsewhere —
/// runs by state over the last 24 hours and 7 days, and the last failures with their errors.
public struct Overview: Codable, Sendable {
    public var runsLast24h: [String: Int]
    public var runsLast7d: [String: Int]
    public var recentFailures: [RecentFailure]
    public var at: Date
}

extension SchedulerStore {
    /// Counts by state over `created_at` (a BRIN index: recent runs are read, old ones skipped,
    /// at no cost to inserts), and the newest failed runs (by state, newest first).
    public func overview(now: Date, failures: Int = 10) async throws -> Overview {
        try await db.run { s in
            let found = try s.queries([
                ("""
                 SELECT state, count(*) FILTER (WHERE created_at >= $1) AS day, count(*) AS week FROM runs WHERE created_at >= $2 GROUP BY state
                 """, [now.addingTimeInterval(-86_400), now.addingTimeInterval(-7 * 86_400)]),
                ("""
                 SELECT r.run_id, r.flow_id, r.trigger_kind, r.logical_date, r.ended_at, f.task_id, f.error
                 FROM (SELECT id, run_id, flow_id, trigger_kind, logical_date, ended_at FROM runs WHERE state = 'failed' ORDER BY id DESC LIMIT $1) r
                 LEFT JOIN LATERAL (SELECT task_id, error FROM task_instances t WHERE t.run_pk = r.id AND t.state = 'failed' AND t.map_parent IS NULL
                                    ORDER BY t.ended_at NULLS LAST LIMIT 1) f ON true
                 ORDER BY r.id DESC
                 """, [failures]),
            ])
            var day: [String: Int] = [:], week: [String: Int] = [:]
            for r in found[0].all {
                let st = try r.string("state")
                if try r.int("day") > 0 { day[st] = try r.int("day") }
                week[st] = try r.int("week")
            }
            let failed = try found[1].all.map { r in
                RecentFailure(runId: try r.string("run_id"), flowId: try r.string("flow_id"), triggerKind: try r.string("trigger_kind"),
                              logicalDate: try r.date("logical_date"), endedAt: try r.dateOrNull("ended_at"),
                              taskId: try r.stringOrNull("task_id"), error: try r.stringOrNull("error"))
            }
            return Overview(runsLast24h: day, runsLast7d: week, recentFailures: failed, at: now)
        }
    }
}
