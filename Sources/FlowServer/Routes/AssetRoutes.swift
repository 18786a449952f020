import FlowKit
import Foundation
import Hummingbird
import HTTPTypes
import Scheduler

/// Assets and their events, posted by clients or by S3 notifications.
struct AssetRoutes: APIResource {
    let api: FlowAPI

    func register(_ routes: APIRoutes) {
        routes.on(.get, "/api/v1/assets", role: .read) { _, _ in
            try json(AssetList(assets: try await api.store.assets()))
        }
        routes.on(.get, "/api/v1/assets/events", role: .read) { req, _ in
            let q = req.uri.queryParameters
            guard let uri = q.get("uri").map({ String($0) }), !uri.isEmpty else { throw APIError.badRequest("`uri` names the asset: ?uri=scheme://name") }
            let limit = try FlowAPI.count(q.get("limit"), "limit", default: 100, max: 1000)
            return try json(AssetEventList(events: try await api.store.assetEvents(uri: uri, limit: limit)))
        }
        routes.on(.post, "/api/v1/assets/events", role: .events) { req, c in
            let body = try await api.body(AssetEventBody.self, req, c)
            let (id, runs) = try await api.store.postAssetEvent(uri: body.uri, extra: .object(body.extra ?? [:]), now: api.config.clock.now())
            return try json(AssetEventPosted(eventId: id, runs: runs.map(\.runId)), status: .created)
        }
        routes.open(.post, "/api/v1/assets/events/s3",
             why: "bucket notifications: checked against the notification secret, or an events token") { req, ctx in
            try await api.s3Events(req, ctx)
        }
    }
}
