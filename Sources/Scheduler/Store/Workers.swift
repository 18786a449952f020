import CeleryProtocol
import FlowKit
public import Foundation
import PostgresClient

/// Workers as their events describe them.
extension SchedulerStore {
    func upsertWorker(_ s: PGSession, _ ev: WorkerEvent, now: Date) throws {
        let info = ev.info
        let at = Date(timeIntervalSince1970: ev.at)
        let state = ev.kind == .workerOffline ? "offline" : "online"
        s.enqueue("""
            INSERT INTO workers (name, host, pid, queues, concurrency, version, started_at, heartbeat_at, running, state, flows, import_errors)
            VALUES ($1, $2, $3, $4::text[], $5, $6, $7, $7, $8, $9, $11::jsonb, $12::jsonb)
            ON CONFLICT (name) DO UPDATE SET heartbeat_at = GREATEST(workers.heartbeat_at, EXCLUDED.heartbeat_at),
                running = EXCLUDED.running,
                -- A heartbeat processed after the worker's offline event (sent just before it) must
                -- not bring a stopped worker back online.
                state = CASE WHEN EXCLUDED.heartbeat_at >= workers.heartbeat_at THEN EXCLUDED.state ELSE workers.state END,
                host = CASE WHEN $10 THEN EXCLUDED.host ELSE workers.host END,
                pid = COALESCE(EXCLUDED.pid, workers.pid),
                queues = CASE WHEN $10 THEN EXCLUDED.queues ELSE workers.queues END,
                concurrency = CASE WHEN $10 THEN EXCLUDED.concurrency ELSE workers.concurrency END,
                version = COALESCE(EXCLUDED.version, workers.version),
                started_at = CASE WHEN $10 THEN EXCLUDED.started_at ELSE workers.started_at END,
                flows = CASE WHEN $10 THEN EXCLUDED.flows ELSE workers.flows END,
                import_errors = CASE WHEN $10 THEN EXCLUDED.import_errors ELSE workers.import_errors END
            """, [ev.worker, info?["host"]?.stringValue ?? "unknown", info?["pid"]?.intValue, (info?["queues"]?.arrayValue ?? []).compactMap(\.stringValue),
                  info?["concurrency"]?.intValue ?? 1, info?["version"]?.stringValue, at, ev.running?.count ?? 0, state,
                  ev.kind == .workerOnline, info?["flows"].map(\.compactJSON), info?["importErrors"].map(\.compactJSON)])
    }

    /// Every worker that ever reported. One that says it is online but has not heart-beaten for
    /// `lostAfter` seconds (killed, or cut off, with no offline event) is `lost`.
    public func workers(now: Date, lostAfter: Double = 30) async throws -> [WorkerRecord] {
        try await db.run { s in
            try s.query("""
                SELECT w.name, w.host, w.pid, w.queues::text AS queues, w.concurrency, w.version,
                       CASE WHEN w.state = 'online' AND w.heartbeat_at < $1 THEN 'lost' ELSE w.state END AS state,
                       w.running, w.started_at, w.heartbeat_at,
                       (SELECT jsonb_agg(jsonb_build_object('flowId', e.key, 'version', v.version, 'hash', e.value) ORDER BY e.key)
                        FROM jsonb_each_text(w.flows) e LEFT JOIN flow_versions v ON v.flow_id = e.key AND v.hash = e.value)::text AS flows
                FROM workers w ORDER BY w.name
                """, [now.addingTimeInterval(-lostAfter)]).all.map { r in
                let hb = try r.date("heartbeat_at")
                return WorkerRecord(name: try r.string("name"), host: try r.string("host"), pid: try r.intOrNull("pid"), queues: try r.strings("queues"),
                                    concurrency: try r.int("concurrency"), version: try r.stringOrNull("version"), state: try r.string("state"),
                                    running: try r.int("running"), startedAt: try r.date("started_at"), heartbeatAt: hb,
                                    heartbeatAgeSeconds: max(0, now.timeIntervalSince(hb)),
                                    flows: try r.stringOrNull("flows").flatMap { try? JSONDecoder().decode([WorkerFlow].self, from: Data($0.utf8)) })
            }
        }
    }

    /// Running tries whose heartbeat in the database is older than `heartbeatTimeout`: who ran
    /// them and where their message lives, for the reaper to ask Redis about before it decides.
    public func staleTries(now: Date, heartbeatTimeout: Double, limit: Int = 500) async throws -> [StaleTry] {
        try await db.run { s in
            try s.query("""
                SELECT worker, message_id, queue FROM task_instances
                WHERE state = 'running' AND heartbeat_at < $1 AND message_id IS NOT NULL AND executor = 'flowkit' LIMIT $2
                """, [now.addingTimeInterval(-heartbeatTimeout), limit]).all.map {
                StaleTry(worker: try $0.stringOrNull("worker"), messageId: try $0.string("message_id"), queue: try $0.string("queue"))
            }
        }
    }
}

/// A running try with a stale heartbeat (`SchedulerStore.staleTries`).
public struct StaleTry: Sendable, Equatable {
    public var worker: String?
    public var messageId: String
    public var queue: String
}
