public import FlowJSON
import Foundation

/// A task outcome in Celery's Redis result-backend form: the value stored at
/// `celery-task-meta-<id>` and published on the channel of the same name.
public enum CeleryResult {
    public static func key(_ taskId: String) -> String { "celery-task-meta-\(taskId)" }

    public static func success(taskId: String, result: JSONValue?, name: String? = nil, worker: String? = nil) -> String {
        meta(taskId: taskId, status: "SUCCESS", result: result ?? .null, traceback: nil, name: name, worker: worker)
    }

    public static func failure(taskId: String, errorType: String, message: String, name: String? = nil, worker: String? = nil) -> String {
        let exc: JSONValue = ["exc_type": .string(errorType), "exc_message": [.string(message)], "exc_module": "builtins"]
        return meta(taskId: taskId, status: "FAILURE", result: exc, traceback: message, name: name, worker: worker)
    }

    static func meta(taskId: String, status: String, result: JSONValue, traceback: String?, name: String?, worker: String?) -> String {
        var o: [String: JSONValue] = [
            "status": .string(status), "result": result, "traceback": traceback.map(JSONValue.string) ?? nil,
            "children": [], "date_done": .string(String(Instant.format(Date(), fractionDigits: 6).dropLast())), "task_id": .string(taskId),
        ]
        if let name { o["name"] = .string(name) }
        if let worker { o["worker"] = .string(worker) }
        return JSONValue.object(o).compactJSON
    }

    /// The commands that store and publish an outcome (`expires` in seconds, Celery's default a day).
    public static func commands(taskId: String, meta: String, expires: Int = 86_400) -> [[String]] {
        [["SET", key(taskId), meta, "EX", String(expires)], ["PUBLISH", key(taskId), meta]]
    }
}
