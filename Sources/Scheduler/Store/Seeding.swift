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
}
