import FlowKit
import Foundation
import Hummingbird
import HTTPTypes
import Scheduler

/// The audit log and the dead-letter list (admin only).
struct AuditRoutes: APIResource {
    let api: FlowAPI

    func register(_ routes: APIRoutes) {
        routes.on(.get, "/api/v1/audit", role: .admin) { req, _ in
            let q = req.uri.queryParameters
            let limit = try FlowAPI.count(q.get("limit"), "limit", default: 100, max: 1000)
            var before: Int?
            if let b = q.get("before") {
                guard let n = Int(b), n > 0 else { throw APIError.badRequest("`before` must be an entry id") }
                before = n
            }
            let actor = q.get("actor").map { String($0) }, action = q.get("action").map { String($0) }
            return try json(AuditPage(entries: try await api.store.auditLog(actor: actor, action: action, before: before, limit: limit)))
        }
        // What workers and schedulers could not use, before the capped list drops it. Admin only:
        // a dead message carries its run's params.
        routes.on(.get, "/api/v1/dead-letters", role: .admin) { req, _ in
            let q = req.uri.queryParameters
            let limit = try FlowAPI.count(q.get("limit"), "limit", default: 50, max: 1000)
            let offset = try FlowAPI.count(q.get("offset"), "offset", default: 0, max: SchedulerBroker.deadLetterCapacity, min: 0)
            let page = try await api.broker.deadLetters(offset: offset, limit: limit)
            return try json(DeadLetterPage(total: page.total, capacity: SchedulerBroker.deadLetterCapacity, entries: page.entries))
        }
    }
}
