import FlowKit
import Foundation
import Hummingbird
import HTTPTypes
import Scheduler

/// Notification deliveries and their outcome.
struct NotificationRoutes: APIResource {
    let api: FlowAPI

    func register(_ routes: APIRoutes) {
        routes.on(.get, "/api/v1/notifications", role: .read) { req, _ in
            let q = req.uri.queryParameters
            var status: String?
            if let st = q.get("status") {
                guard ["pending", "delivered", "failed"].contains(st) else { throw APIError.badRequest("`status` must be pending, delivered or failed") }
                status = st
            }
            let limit = try FlowAPI.count(q.get("limit"), "limit", default: 100, max: 1000)
            let run = q.get("run_id").map { String($0) }
            return try json(NotificationList(notifications: try await api.store.notifications(runId: run, status: status, limit: limit)))
        }
    }
}
