import FlowKit
import Foundation
import Hummingbird
import HTTPTypes
import Scheduler

/// Runs: the list (keyset-paged), one run, cancelling, clearing tasks.
struct RunRoutes: APIResource {
    let api: FlowAPI

    func register(_ routes: APIRoutes) {
        routes.on(.get, "/api/v1/runs", role: .read) { req, _ in
            let q = req.uri.queryParameters
            var f = RunFilter()
            f.flowId = q.get("flow_id")
            if let st = q.get("state") {
                guard RunState(rawValue: st) != nil else {
                    throw APIError.badRequest("`state` must be one of \(RunState.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                f.state = st
            }
            for (key, keyPath) in [("since", \RunFilter.since), ("until", \RunFilter.until)] {
                if let v = q.get(key) {
                    f[keyPath: keyPath] = try apiInstant(String(v), key)
                }
            }
            if let l = q.get("limit") {
                guard let n = Int(l), (1...500).contains(n) else { throw APIError.badRequest("`limit` must be a whole number from 1 to 500") }
                f.limit = n
            }
            if let k = q.get("kind") {
                let kinds = ["scheduled", "manual", "backfill", "asset", "webhook", "flow"]
                guard kinds.contains(String(k)) else { throw APIError.badRequest("`kind` must be one of \(kinds.joined(separator: ", "))") }
                f.kind = String(k)
            }
            if let tc = q.get("taskCounts") ?? q.get("task_counts") {
                guard let b = ["true": true, "false": false][String(tc)] else { throw APIError.badRequest("`taskCounts` must be true or false") }
                f.withTaskCounts = b
            }
            if let cur = q.get("cursor") {
                guard let n = Int(cur), n > 0 else { throw APIError.badRequest("`cursor` is not a cursor this API returned") }
                f.before = n
            }
            let runs = try await api.store.runs(f)
            let next: JSONValue = runs.count == f.limit ? .string(String(runs.last!.id)) : .null
            return try json(RunPage(runs: runs, nextCursor: next.stringValue))
        }
        // The dashboard's home: runs by state over 24 h and 7 days, and the last failures.
        // Shared by concurrent requests and kept for a second (SharedAnswer): its counts scan a
        // week of runs, and every open dashboard asks for it.
        routes.on(.get, "/api/v1/overview", role: .read) { _, _ in
            try json(try await api.overviewAnswer.get { [store = api.store, clock = api.config.clock] in try await store.overview(now: clock.now()) })
        }
        routes.on(.get, "/api/v1/runs/{run_id}", role: .read) { _, c in
            try json(try await api.store.run(try await api.runParam(c)))
        }
        routes.on(.post, "/api/v1/runs/{run_id}/cancel", role: .admin) { _, c in
            let id = try await api.runParam(c)
            let work = try await api.store.cancelRun(runId: id, now: api.config.clock.now())
            return try await api.answer(afterWrite: work, run: id, sent: "stopRequested")
        }
        routes.on(.post, "/api/v1/runs/{run_id}/clear", role: .admin) { req, c in
            let id = try await api.runParam(c)
            let body = try await api.body(ClearBody.self, req, c, allowEmpty: true)
            let work = try await api.store.clearTasks(runId: id, taskIds: body.taskIds, onlyFailed: body.onlyFailed ?? false,
                                                      now: api.config.clock.now())
            return try await api.answer(afterWrite: work, run: id, sent: "messagesSent")
        }
    }
}
