import FlowKit
import Foundation
import Hummingbird
import HTTPTypes
import Scheduler

/// Backfills as objects: create (or dry-run), list, one with its ticks, pause, resume, cancel.
struct BackfillRoutes: APIResource {
    let api: FlowAPI

    func register(_ routes: APIRoutes) {
        routes.on(.post, "/api/v1/backfills", role: .admin) { req, c in
            let body = try await api.body(BackfillCreateBody.self, req, c)
            var r = BackfillRequest(flowId: body.flowId, from: try apiInstant(body.from, "from"), to: try apiInstant(body.to, "to"))
            r.conf = body.conf ?? [:]
            if let p = body.reprocess {
                guard let v = Reprocess(rawValue: p) else { throw APIError.badRequest("`reprocess` must be none, failed or all, not `\(p)`") }
                r.reprocess = v
            }
            if let n = body.maxActiveRuns {
                guard (1...1000).contains(n) else { throw APIError.badRequest("`maxActiveRuns` must be a whole number from 1 to 1000, not \(n)") }
                r.maxActiveRuns = n
            }
            r.newestFirst = body.newestFirst ?? false
            if body.dryRun == true { return try json(try await api.store.planBackfill(r)) }
            return try json(try await api.store.createBackfill(r, now: api.config.clock.now()), status: .created)
        }
        routes.on(.get, "/api/v1/backfills", role: .read) { req, _ in
            let q = req.uri.queryParameters
            var state: String?
            if let s = q.get("state") {
                guard ["running", "paused", "cancelled", "completed"].contains(String(s)) else {
                    throw APIError.badRequest("`state` must be one of running, paused, cancelled, completed")
                }
                state = String(s)
            }
            let limit = try FlowAPI.count(q.get("limit"), "limit", default: 100, max: 500)
            let flow: String? = q.get("flow_id").map { String($0) }
            return try json(BackfillList(backfills: try await api.store.backfills(flowId: flow, state: state, limit: limit)))
        }
        routes.on(.get, "/api/v1/backfills/{backfill_id}", role: .read) { _, c in
            try json(try await api.store.backfill(id: try backfillId(c)))
        }
        for (action, target) in [("pause", "paused"), ("resume", "running"), ("cancel", "cancelled")] {
            routes.on(.post, "/api/v1/backfills/{backfill_id}/\(action)", role: .admin) { _, c in
                let id = try backfillId(c)
                let (detail, work) = try await api.store.setBackfillState(id: id, to: target, now: api.config.clock.now())
                // The queued runs a cancel ended have no running task to stop; a lost message is harmless.
                _ = await BrokerRetry.send(work, broker: api.broker, logger: api.logger, what: "backfill \(id) \(action)")
                return try json(detail)
            }
        }
    }

    private func backfillId(_ c: FlowRequestContext) throws -> Int {
        let raw = try api.param(c, "backfill_id")
        guard let id = Int(raw), id > 0 else { throw APIError(.notFound, "not_found", "unknown backfill `\(raw)`: a backfill id is a number") }
        return id
    }
}
