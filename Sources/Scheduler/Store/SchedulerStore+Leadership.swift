import Foundation
import PostgresClient

/// Which scheduler leads: the one holding a session-level PostgreSQL advisory lock on its own
/// connection. The lock lives as long as that session, so when a leader dies another scheduler
/// takes it at its next ask. Leader-only duties (reaper, unacked restorer, lost-message
/// rescuer, Celery result collector, abandoned-event claimer) ask before each batch.
public final class LeaderElector: Sendable {
    static let lockKey = 7_240_003
    let connection: PGConnection

    public init(databaseURL: String, label: String = "sched-leader") {
        connection = PGConnection(databaseURL, label: label)
    }

    /// Whether this scheduler holds the lock, taking it when it is free (idempotent).
    public func isLeader() async throws -> Bool {
        try await connection.run { s in
            try s.query("SELECT pg_try_advisory_lock($1) AS l", [Self.lockKey]).first?.bool("l") ?? false
        }
    }
}
