import Foundation
import PostgresClient

/// Synthetic history for the benchmarks (`flowctl bench`): rows written straight into the
/// tables, each set in one long statement on a connection of its own.
extension SchedulerStore {
    /// `count` finished runs of `flowId` (W5 reads them through the API).
    public static func seedFinishedRuns(databaseURL: String, flowId: String, count: Int) async throws {
        try await PGConnection(databaseURL, options: PGOptions(replyTimeout: 3600)).run { s in
            try s.query("""
                INSERT INTO runs (run_id, flow_id, flow_version, trigger_kind, state, logical_date, data_interval_start, data_interval_end, created_at, started_at, ended_at)
                SELECT 'seed__' || g, $1, 1, 'manual', 'success', now() - g * interval '1 minute', now(), now(), now(), now(), now()
                FROM generate_series(1, $2::int) g
                ON CONFLICT DO NOTHING
                """, [flowId, count])
            // Statistics as autovacuum would have them a minute later: taken while W1's runs were
            // being updated, they said the table held 42 rows, and every request of W5 scanned
            // and sorted all 10,000 (343 req/s instead of 3,300).
            try s.execute("ANALYZE runs")
        }
    }

    /// W6's history: `flows` scheduled flows (shaped like `templateFlowId`), `runs` finished runs
    /// among them and `tasksPerRun` finished task instances each.
    public static func seedHistory(databaseURL: String, templateFlowId: String, flows: Int = 2000, runs: Int = 10_000,
                                   tasksPerRun: Int = 100) async throws {
        try await PGConnection(databaseURL, options: PGOptions(replyTimeout: 3600)).run { s in
            try s.query("""
                INSERT INTO flows (flow_id, current_version, schedule, timezone, next_tick)
                SELECT 'seed_flow_' || g, 1, '0 0 * * *', 'UTC', now() + interval '1 day' FROM generate_series(1, $1::int) g ON CONFLICT DO NOTHING
                """, [flows])
            try s.query("""
                INSERT INTO flow_versions (flow_id, version, hash, definition)
                SELECT 'seed_flow_' || g, 1, md5(g::text), (SELECT definition FROM flow_versions WHERE flow_id = $2 LIMIT 1)
                FROM generate_series(1, $1::int) g ON CONFLICT DO NOTHING
                """, [flows, templateFlowId])
            // The seeded flows stay active as if a scheduler of their binary ran all along: a
            // carrier whose heartbeat is a day ahead (the leader deactivates flows nobody carries).
            try s.query("""
                INSERT INTO schedulers (name, host, started_at, heartbeat_at, flows)
                SELECT 'seeded-history', 'bench', now(), now() + interval '1 day', jsonb_object_agg('seed_flow_' || g, 1) FROM generate_series(1, $1::int) g
                ON CONFLICT (name) DO UPDATE SET flows = EXCLUDED.flows, heartbeat_at = EXCLUDED.heartbeat_at
                """, [flows])
            try s.query("""
                INSERT INTO runs (run_id, flow_id, flow_version, trigger_kind, state, logical_date, data_interval_start, data_interval_end, ended_at)
                SELECT 'hist__' || g, 'seed_flow_' || (g % $2::int + 1), 1, 'scheduled', 'success', now() - g * interval '1 hour', now(), now(), now()
                FROM generate_series(1, $1::int) g ON CONFLICT DO NOTHING
                """, [runs, flows])
            try s.query("""
                INSERT INTO task_instances (run_pk, task_id, state, try_number, max_tries, queue, message_id, queued_at, started_at, ended_at)
                SELECT r.id, 't' || t, 'success', 1, 1, 'default', r.id || '-' || t, now(), now(), now()
                FROM runs r CROSS JOIN generate_series(0, $1::int - 1) t WHERE r.run_id LIKE 'hist__%' ON CONFLICT DO NOTHING
                """, [tasksPerRun])
            try s.execute("ANALYZE")
        }
    }

    /// W12's database: finished runs up to `total` in all, interleaved as a busy system makes them:
    /// every tenth of the new runs is `gridFlow`'s (up to `gridRuns` of them), the others spread
    /// over `otherFlows`; the newest 200 of `gridFlow` get their task instances (as many runs as
    /// its grid can show). Returns the runs inserted and the runs in the database.
    public static func seedScaleRuns(databaseURL: String, total: Int, gridFlow: String, gridRuns: Int,
                                     otherFlows: [String]) async throws -> (inserted: Int, total: Int) {
        try await PGConnection(databaseURL, options: PGOptions(replyTimeout: 3600)).run { s in
            let before = try s.query("SELECT count(*) AS n FROM runs").single().int("n")
            let have = try s.query("SELECT count(*) AS n FROM runs WHERE flow_id = $1", [gridFlow]).single().int("n")
            let count = max(0, total - before)
            // Every tenth run is the grid flow's while it has fewer than `gridRuns`; the others go
            // round the other flows, one a day per flow as their daily schedules leave them.
            try s.query("""
                INSERT INTO runs (run_id, flow_id, flow_version, trigger_kind, state, logical_date, data_interval_start, data_interval_end, created_at, started_at, ended_at)
                SELECT 'w12__' || (g + $5::int), CASE WHEN grid THEN $1 ELSE f[g % cardinality(f) + 1] END, 1,
                       'scheduled', CASE WHEN g % 97 = 0 THEN 'failed' ELSE 'success' END,
                       CASE WHEN grid THEN now() - ($3::int - g) * interval '1 minute'
                            ELSE now() - (($3::int - g) / cardinality(f) + 1) * interval '1 day' END,
                       now() - (($3::int - g) / cardinality(f) + 2) * interval '1 day', now() - (($3::int - g) / cardinality(f) + 1) * interval '1 day',
                       now() - ($3::int - g) * interval '1 second', now() - ($3::int - g) * interval '1 second',
                       now() - ($3::int - g) * interval '1 second' + interval '42 seconds'
                FROM generate_series(1, $3::int) g, (SELECT $2::text[] AS f) flows,
                     LATERAL (SELECT g % 10 = 0 AND g / 10 < $4::int - $6::int AS grid) kind
                ON CONFLICT DO NOTHING
                """, [gridFlow, otherFlows.isEmpty ? [gridFlow] : otherFlows, count, gridRuns, before, have])
            // The grid's runs with their tasks: the newest 200 of the flow, ten tasks each.
            try s.query("""
                INSERT INTO task_instances (run_pk, task_id, state, try_number, max_tries, queue, message_id, queued_at, started_at, ended_at)
                SELECT r.id, 't' || t, r.state, 1, 1, 'default', r.id || '-' || t, r.started_at, r.started_at + t * interval '4 seconds',
                       r.started_at + (t + 1) * interval '4 seconds'
                FROM (SELECT id, state, started_at FROM runs WHERE flow_id = $1 ORDER BY id DESC LIMIT 200) r CROSS JOIN generate_series(0, 9) t
                ON CONFLICT DO NOTHING
                """, [gridFlow])
            try s.execute("ANALYZE runs")
            try s.execute("ANALYZE task_instances")
            let after = try s.query("SELECT count(*) AS n FROM runs").single().int("n")
            return (after - before, after)
        }
    }
}
