import FlowKit
import Foundation
import Hummingbird
import HTTPTypes
import Scheduler

/// A run's task instances: the list, a try's log, marking one, deciding an approval; the approvals waiting.
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
        // Human in the loop: the decision on an approval task that waits for one (audited; the
        // scheduler ends the task with it within a moment).
        routes.on(.post, "/api/v1/runs/{run_id}/tasks/{task_id}/decision", role: .admin) { req, c in
            let id = try await api.runParam(c)
            let body = try await api.body(DecisionBody.self, req, c)
            if let c = body.comment, c.utf8.count > 2000 || c.utf8.contains(0) {
                throw APIError.badRequest("`comment` must be a string of at most 2,000 bytes, without NUL characters")
            }
            let comment = body.comment?.isEmpty == true ? nil : body.comment
            return try json(try await api.store.decide(runId: id, taskId: try api.param(c, "task_id"), decision: body.decision, comment: comment,
                                                       values: body.values ?? [:], now: api.config.clock.now()))
        }
        routes.on(.get, "/api/v1/approvals", role: .read) { req, _ in
            let q = req.uri.queryParameters
            var waitingOnly = true
            if let st = q.get("state") {
                guard let w = ["waiting": true, "all": false][String(st)] else { throw APIError.badRequest("`state` must be waiting or all") }
                waitingOnly = w
            }
            let limit = try FlowAPI.count(q.get("limit"), "limit", default: 200, max: 1000)
            let run: String? = q.get("run_id").map { String($0) }
            return try json(ApprovalList(approvals: try await api.store.approvals(waitingOnly: waitingOnly, runId: run, limit: limit)))
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
            let limit = try FlowAPI.count(q.get("limit"), "limit", default: 1000, max: 10_000)
            let r = try await api.store.logs(runId: try await api.runParam(c), taskId: try api.param(c, "task_id"),
                                              tryNumber: tryNumber, after: offset, limit: limit)
            return try json(LogPage(tryNumber: r.tryNumber, lines: r.lines, nextOffset: r.lines.last?.offset ?? offset))
        }
    }
}
