import CeleryProtocol
import FlowKit
public import Foundation
import PostgresClient
import Synchronization

/// Schedulers: their heartbeats and the durable flush of applied events.
extension SchedulerStore {
    /// A synchronous commit: when it returns, every transaction this scheduler committed before
    /// it — including those committed with `synchronous_commit = off` — is durable.
    public func flushDurably(name: String, host: String, startedAt: Date, now: Date) async throws {
        try await schedulerHeartbeat(name: name, host: host, startedAt: startedAt, now: now)
    }

    public func schedulerHeartbeat(name: String, host: String, startedAt: Date, now: Date) async throws {
        let standby = try await db.run { s in
            try s.query("""
                INSERT INTO schedulers (name, host, started_at, heartbeat_at) VALUES ($1, $2, $3, $4)
                ON CONFLICT (name) DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at
                RETURNING current_setting('synchronous_standby_names') <> '' AS standby
                """, [name, host, startedAt, now]).single().bool("standby")
        }
        commitsWaitForStandby.store(standby, ordering: .relaxed)
    }

    /// Seconds since the freshest scheduler heartbeat (nil when no scheduler ever ran).
    public func schedulerHeartbeatAge(now: Date) async throws -> Double? {
        try await db.run { s in
            try s.query("SELECT max(heartbeat_at) AS t FROM schedulers").first?.dateOrNull("t").map { now.timeIntervalSince($0) }
        }
    }

    /// Schedulers heard from in the last ten minutes, freshest first, and whether some session
    /// holds the leader lock (the health page's view).
    public func schedulers(now: Date) async throws -> (schedulers: [SchedulerRecord], leaderHeld: Bool) {
        try await db.run { s in
            let rows = try s.query("""
                SELECT name, host, started_at, heartbeat_at FROM schedulers WHERE heartbeat_at > $1 ORDER BY heartbeat_at DESC LIMIT 50
                """, [now.addingTimeInterval(-600)]).all
            let held = try s.query("""
                SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = 0 AND objid = $1) AS held
                """, [Int(AdvisoryLock.leader)]).single().bool("held")
            return (try rows.map { r in
                SchedulerRecord(name: try r.string("name"), host: try r.string("host"), startedAt: try r.date("started_at"),
                                heartbeatAgeSeconds: now.timeIntervalSince(try r.date("heartbeat_at")))
            }, held)
        }
    }

    public func ping() async throws {
        try await db.run { s in _ = try s.query("SELECT 1") }
    }
}

/// Which scheduler leads: the one holding a session-level PostgreSQL advisory lock on its own
/// connection. The lock lives as long as that session, so when a leader dies another scheduler
/// takes it at its next ask. Leader-only duties (reaper, unacked restorer, lost-message
/// rescuer, Celery result collector, abandoned-event claimer) ask before each batch.
public final class LeaderElector: Sendable {
    static let lockKey = AdvisoryLock.leader
    let connection: PGConnection

    public init(databaseURL: String, label: String = "sched-leader") {
        // A session lock: through a transaction pooler it needs the session endpoint.
        connection = PGConnection(PGEndpoint.session(databaseURL), label: label)
    }

    /// Whether this scheduler holds the lock, taking it when it is free (idempotent).
    public func isLeader() async throws -> Bool {
        try await connection.run { s in
            try s.query("SELECT pg_try_advisory_lock($1) AS l", [Self.lockKey]).single().bool("l")
        }
    }
}

public struct SchedulerRecord: Codable, Sendable {
    public var name: String
    public var host: String
    public var startedAt: Date
    public var heartbeatAgeSeconds: Double
}
