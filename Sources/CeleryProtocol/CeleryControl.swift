public import FlowJSON
public import Foundation

/// Celery's remote control over kombu's Redis transport: a broadcast to every worker's pidbox is
/// a `PUBLISH` on `/<db>.celery.pidbox` of a kombu envelope whose base64 body names the method —
/// what `app.control.revoke(ids, terminate=True)` sends (captured from Celery 5 with `MONITOR`).
public enum CeleryControl {
    /// The command that revokes `taskIds` on every Celery worker of database `database`, killing
    /// (SIGTERM) those already running, as Airflow's Celery executor does for a killed task. A
    /// worker that does not know an id only remembers it as revoked.
    public static func revokeCommand(taskIds: [String], database: Int, now: Date = Date()) -> [String] {
        let body: JSONValue = [
            "method": "revoke",
            "arguments": ["task_id": .array(taskIds.map { .string($0) }), "terminate": true, "signal": "SIGTERM"],
            "destination": .null, "pattern": .null, "matcher": .null,
        ]
        let envelope: JSONValue = [
            "body": .string(Data(body.compactJSON.utf8).base64EncodedString()),
            "content-encoding": "utf-8", "content-type": "application/json",
            // Celery drops a control message past `expires`: a minute covers a slow worker.
            "headers": ["clock": 1, "expires": .double(now.timeIntervalSince1970 + 60)],
            "properties": [
                "delivery_mode": 2, "delivery_info": ["exchange": "celery.pidbox", "routing_key": ""], "priority": 0,
                "body_encoding": "base64", "delivery_tag": .string(UUID().uuidString.lowercased()),
            ],
        ]
        return ["PUBLISH", "/\(database).celery.pidbox", envelope.compactJSON]
    }
}
