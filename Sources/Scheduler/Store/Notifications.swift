public import FlowKit
public import Foundation
import PostgresClient

/// The notification outbox: rows written in the transaction of the state change that caused
/// them, claimed by the leader's deliverer under a lease, and their delivery attempts.
extension SchedulerStore {
    /// Claims due notifications: each gets a lease (`next_attempt_at` moves past it, so a
    /// deliverer that dies mid-send leaves it to the next one) and one more attempt counted.
    public func claimNotifications(now: Date, lease: Double, limit: Int = 20) async throws -> [(notifier: String, attempt: Int, message: NotificationMessage)] {
        try await db.run { s in
            try s.transaction {
                let rows = try s.query("""
                    UPDATE notifications n SET next_attempt_at = $2, attempts = n.attempts + 1
                    FROM (SELECT id FROM notifications WHERE status = 'pending' AND next_attempt_at <= $1
                          ORDER BY next_attempt_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) d
                    WHERE n.id = d.id
                    RETURNING n.id, n.delivery_key, n.event, n.notifier, n.flow_id, n.run_pk, n.run_id, n.task_id, n.try_number, n.state,
                              n.error, n.created_at, n.attempts
                    """, [now, now.addingTimeInterval(lease), limit]).all
                return try rows.map { r in
                    var tail: [String] = []
                    if let task = try r.stringOrNull("task_id"), let t = try r.intOrNull("try_number") {
                        tail = try s.query("""
                            SELECT line FROM (SELECT id, line FROM task_logs WHERE run_pk = $1 AND task_id = $2 AND try_number = $3
                                              ORDER BY id DESC LIMIT 20) l ORDER BY id
                            """, [r.int("run_pk"), task, t]).all.compactMap { try $0.stringOrNull("line") }
                    }
                    return (try r.string("notifier"), try r.int("attempts"), NotificationMessage(
                        deliveryId: try r.string("delivery_key"), event: NotificationEvent(rawValue: try r.string("event")) ?? .onFailure,
                        flowId: try r.string("flow_id"), runId: try r.string("run_id"), taskId: try r.stringOrNull("task_id"), tryNumber: try r.intOrNull("try_number"),
                        state: try r.string("state"), error: try r.stringOrNull("error"), logTail: tail, at: try r.date("created_at"), runURL: nil))
                }
            }
        }
    }

    /// Records one attempt: delivered, or failed and due again at `retryAt` (nil: given up).
    public func recordDelivery(deliveryKey: String, ok: Bool, statusCode: Int?, error: String?, seconds: Double, retryAt: Date?, now: Date) async throws {
        try await db.run { s in
            try s.transaction {
                try s.query("""
                    WITH n AS (
                        UPDATE notifications SET
                            status = CASE WHEN $2 THEN 'delivered' WHEN $6::timestamptz IS NULL THEN 'failed' ELSE 'pending' END,
                            delivered_at = CASE WHEN $2 THEN $7::timestamptz END, last_error = $4,
                            next_attempt_at = COALESCE($6::timestamptz, next_attempt_at)
                        WHERE delivery_key = $1 AND status = 'pending' RETURNING id)
                    INSERT INTO notification_attempts (notification_id, at, ok, status_code, error, seconds)
                    SELECT id, $7, $2, $3, $4, $5 FROM n
                    """, [deliveryKey, ok, statusCode, error, seconds, retryAt, now])
            }
        }
    }

    /// Notifications that failed on a configuration problem in the last `hours` (no such
    /// connection, no secret): one line per notifier and error, with how many, newest first.
    public func configurationProblems(now: Date, hours: Double = 24) async throws -> [(notifier: String, error: String, count: Int)] {
        try await db.run { s in
            try s.query("""
                SELECT notifier, last_error, count(*) AS n, max(id) AS newest FROM notifications
                WHERE status = 'failed' AND last_error LIKE $1 AND created_at > $2
                GROUP BY notifier, last_error ORDER BY newest DESC LIMIT 20
                """, [DeliveryError.configurationPrefix + "%", now.addingTimeInterval(-hours * 3600)]).all
                .map { (try $0.string("notifier"), try $0.string("last_error"), try $0.int("n")) }
        }
    }

    /// When the earliest pending notification is due.
    public func nextNotificationTime() async throws -> Date? {
        try await db.run { s in
            try s.query("SELECT min(next_attempt_at) AS t FROM notifications WHERE status = 'pending'").first?.dateOrNull("t")
        }
    }

    /// Notifications, newest first, with every attempt; optionally of one run or one status.
    public func notifications(runId: String? = nil, status: String? = nil, limit: Int = 100) async throws -> [NotificationRecord] {
        try await db.run { s in
            let rows = try s.query("""
                SELECT id, delivery_key, event, notifier, flow_id, run_id, task_id, try_number, state, error, status, attempts,
                       next_attempt_at, created_at, delivered_at, last_error
                FROM notifications WHERE ($1::text IS NULL OR run_id = $1) AND ($2::text IS NULL OR status = $2)
                ORDER BY id DESC LIMIT $3
                """, [runId, status, limit]).all
            var attempts: [Int: [NotificationAttempt]] = [:]
            for a in try s.query("""
                SELECT notification_id, at, ok, status_code, error, seconds FROM notification_attempts
                WHERE notification_id = ANY($1::bigint[]) ORDER BY id
                """, [rows.map { try $0.int("id") }]).all {
                attempts[try a.int("notification_id"), default: []].append(NotificationAttempt(
                    at: try a.date("at"), ok: try a.bool("ok"), statusCode: try a.intOrNull("status_code"), error: try a.stringOrNull("error"), seconds: try a.double("seconds")))
            }
            return try rows.map { r in
                NotificationRecord(deliveryKey: try r.string("delivery_key"), event: try r.string("event"), notifier: try r.string("notifier"),
                                   flowId: try r.string("flow_id"), runId: try r.string("run_id"), taskId: try r.stringOrNull("task_id"),
                                   tryNumber: try r.intOrNull("try_number"), state: try r.string("state"), error: try r.stringOrNull("error"),
                                   status: try r.string("status"), attempts: attempts[try r.int("id")] ?? [],
                                   nextAttemptAt: try r.stringOrNull("status") == "pending" ? try r.dateOrNull("next_attempt_at") : nil,
                                   createdAt: try r.date("created_at"), deliveredAt: try r.dateOrNull("delivered_at"), lastError: try r.stringOrNull("last_error"))
            }
        }
    }
}

/// Notification rows for one statement (`ON CONFLICT DO NOTHING` on the delivery key: a
/// state change applied twice notifies once).
struct NotificationBatch {
    var key: [String] = [], event: [String] = [], notifier: [String] = [], flow: [String] = [], runPk: [Int] = []
    var runId: [String] = [], task: [String?] = [], tryNumber: [Int?] = [], state: [String] = [], error: [String?] = []
    var isEmpty: Bool { key.isEmpty }

    mutating func add(_ refs: [NotifierRef], event e: NotificationEvent, flow f: String, runPk p: Int, runId r: String, task t: String?,
                      try n: Int?, state st: String, error err: String?) {
        for ref in refs {
            key.append("\(r)/\(t ?? "run")/\(n ?? 0)/\(e.rawValue)/\(ref)")
            event.append(e.rawValue); notifier.append(ref.description); flow.append(f); runPk.append(p); runId.append(r)
            task.append(t); tryNumber.append(n); state.append(st); error.append(err)
        }
    }

    func insert(_ s: PGSession, now: Date) {
        guard !isEmpty else { return }
        s.enqueue("""
            INSERT INTO notifications (delivery_key, event, notifier, flow_id, run_pk, run_id, task_id, try_number, state, error,
                                       next_attempt_at, created_at)
            SELECT k, e, n, f, p, r, t, y, st, er, $11, $11
            FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::text[], $8::int[], $9::text[], $10::text[])
                 AS u(k, e, n, f, p, r, t, y, st, er)
            ON CONFLICT (delivery_key) DO NOTHING
            """, [key, event, notifier, flow, runPk, runId, task, tryNumber, state, error, now])
        s.notifyAfterCommit("flowkit_notifications", "")
    }
}

/// One notification as the API shows it.
public struct NotificationRecord: Codable, Sendable {
    public var deliveryKey: String
    public var event: String
    public var notifier: String
    public var flowId: String
    public var runId: String
    public var taskId: String?
    public var tryNumber: Int?
    public var state: String
    public var error: String?
    /// pending, delivered or failed (given up after its attempts).
    public var status: String
    public var attempts: [NotificationAttempt]
    public var nextAttemptAt: Date?
    public var createdAt: Date
    public var deliveredAt: Date?
    public var lastError: String?
}

public struct NotificationAttempt: Codable, Sendable {
    public var at: Date
    public var ok: Bool
    public var statusCode: Int?
    public var error: String?
    public var seconds: Double
}
