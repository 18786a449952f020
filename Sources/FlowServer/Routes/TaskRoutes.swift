import FlowKit
import Foundation
import Hummingbird
import HTTPTypes
import Scheduler

/// A run's task instances: the list, a try's log, marking one.
struct TaskRoutes: APIResource {
    let api: FlowAPI

    func register(_ routes: APIRoutes) {
        routes.on(.post, "/api/v1/runs/{run_id}/tasks/{task_id}/mark", role: .admin) { req, c in
            let id = try await api.runParam(c)
            let body = try await api.body(MarkBody.self, req, c)
            guard let state = TaskState(rawValue: body.state), state == .success || state == .failed else {
                throw APIError.badRequest("`state` must be \"success\" or \"failed\"")
            }
            let work = try await api.store.markTask(runId: id, taskId: try api.param(c, "task_id"), as: state, now: api.config.clock.now())
            return try await api.answer(afterWrite: work, run: id, sent: "messagesSent")
        }
        routes.on(.get, "/api/v1/runs/{run_id}/tasks", role: .read) { _, c in
            try json(TaskList(tasks: try await api.store.taskInstances(runId: try await api.runParam(c))))
        }
        routes.on(.get, "/api/v1/runs/{run_id}/tasks/{task_id}/logs", role: .read) { req, c in
            let q = req.uri.queryParameters
            var tryNumber: Int?
            if let t = q.get("try") {
                guard let n = Int32(t), n >= 1 else { throw APIError.badRequest("`try` must be a try number from 1 to \(Int32.max)") }
                tryNumber = Int(n)
            }
            var offset = 0
            if let o = q.get("offset") {
                guard let n = Int(o), n >= 0 else { throw APIError.badRequest("`offset` must be a whole number from 0 to \(Int.max)") }
                offset = n
            }
            let r = try await api.store.logs(runId: try await api.runParam(c), taskId: try api.param(c, "task_id"),
                                              tryNumber: tryNumber, after: offset)
            return try json(LogPage(tryNumber: r.tryNumber, lines: r.lines, nextOffset: r.lines.last?.offset ?? offset))
        }
    }
}
