public import Foundation
import PostgresClient

/// Retention (Airflow's `db clean`): finished runs older than a cutoff are deleted with their
/// task instances, tries, history, logs and notifications, a batch per short transaction.
extension SchedulerStore {
    /// What a cleanup deleted (or, dry, would delete).
    public struct CleanReport: Sendable, Equatable {
        public var runs = 0
        public var taskInstances = 0
        public var logLines = 0
        public var batches = 0
        public init() {}
    }

    /// Deletes the runs that ended (success, failed or cancelled) before `cutoff` — of `flows`
    /// only, when given — with everything recorded under them. Each batch of `batch` runs is one
    /// transaction that takes the runs with SKIP LOCKED, so that it never waits for (nor holds up)
    /// a scheduler, and two cleaners at once delete each run once. Queued and running runs are
    /// never touched, whatever their age. `dryRun` counts instead.
    public func cleanHistory(before cutoff: Date, flows: [String]? = nil, batch: Int = 500, dryRun: Bool = false,
                             pause: Duration = .milliseconds(20)) async throws -> CleanReport {
        let filter = """
            state IN ('success', 'failed', 'cancelled') AND COALESCE(ended_at, created_at) < $1
              AND ($2::text[] IS NULL OR flow_id = ANY($2::text[]))
            """
        var report = CleanReport()
        if dryRun {
            return try await db.run { s in
                let r = try s.query("""
                    WITH r AS (SELECT id FROM runs WHERE \(filter))
                    SELECT (SELECT count(*) FROM r) AS runs,
                           (SELECT count(*) FROM task_instances WHERE run_pk IN (SELECT id FROM r)) AS tis,
                           (SELECT count(*) FROM task_logs WHERE run_pk IN (SELECT id FROM r)) AS logs
                    """, [cutoff, flows]).single()
                var counted = CleanReport()
                counted.runs = try r.int("runs"); counted.taskInstances = try r.int("tis"); counted.logLines = try r.int("logs")
                return counted
            }
        }
        while true {
            let done = try await db.run { s in
                try s.transaction {
                    // Every data-modifying CTE runs to completion whether or not the final SELECT reads it.
                    try s.query("""
                        WITH r AS (SELECT id, run_id FROM runs WHERE \(filter) ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED),
                             l AS (DELETE FROM task_logs WHERE run_pk IN (SELECT id FROM r) RETURNING 1),
                             h AS (DELETE FROM task_history WHERE run_pk IN (SELECT id FROM r) RETURNING 1),
                             tr AS (DELETE FROM task_tries WHERE run_pk IN (SELECT id FROM r) RETURNING 1),
                             ti AS (DELETE FROM task_instances WHERE run_pk IN (SELECT id FROM r) RETURNING 1),
                             n AS (SELECT id FROM notifications WHERE run_id IN (SELECT run_id FROM r)),
                             na AS (DELETE FROM notification_attempts WHERE notification_id IN (SELECT id FROM n) RETURNING 1),
                             nd AS (DELETE FROM notifications WHERE id IN (SELECT id FROM n) RETURNING 1),
                             rd AS (DELETE FROM runs WHERE id IN (SELECT id FROM r) RETURNING 1)
                        SELECT (SELECT count(*) FROM rd) AS runs, (SELECT count(*) FROM ti) AS tis, (SELECT count(*) FROM l) AS logs
                        """, [cutoff, flows, batch]).single()
                }
            }
            let runs = try done.int("runs")
            guard runs > 0 else {
                // S3 deliveries remembered for deduplication, as old as the runs just removed.
                if flows == nil { try await db.run { s in try s.query("DELETE FROM s3_event_deliveries WHERE at < $1", [cutoff]) } }
                return report
            }
            report.runs += runs; report.taskInstances += try done.int("tis"); report.logLines += try done.int("logs"); report.batches += 1
            // Room between batches for the schedulers' own transactions.
            try await Task.sleep(for: pause)
        }
    }
}
