import FlowKit
import Foundation
import Hummingbird
import HTTPTypes
import Scheduler

/// The live stream of the schedulers' change notifications (server-sent events).
struct EventRoutes: APIResource {
    let api: FlowAPI

    func register(_ routes: APIRoutes) {
        routes.on(.get, "/api/v1/events/stream", role: .read) { req, _ in
            var seconds = 300.0
            if let v = req.uri.queryParameters.get("maxSeconds") {
                guard let n = Double(v), n >= 1, n <= 3600 else { throw APIError.badRequest("`maxSeconds` must be a number from 1 to 3600") }
                seconds = n
            }
            return api.eventStream(maxSeconds: seconds)
        }
    }
}
