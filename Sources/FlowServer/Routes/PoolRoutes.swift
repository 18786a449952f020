import FlowKit
import Foundation
import Hummingbird
import HTTPTypes
import Scheduler

/// Pools: usage, and admin edits.
struct PoolRoutes: APIResource {
    let api: FlowAPI

    func register(_ routes: APIRoutes) {
        routes.on(.get, "/api/v1/pools", role: .read) { _, _ in
            try json(PoolList(pools: try await api.store.pools()))
        }
        routes.on(.put, "/api/v1/pools/{pool}", role: .admin) { req, c in
            let body = try await api.body(PoolBody.self, req, c)
            let description = try FlowAPI.checkedDescription(body.description)
            let pool = try await api.store.setPool(name: try api.param(c, "pool"), slots: body.slots, description: description)
            return try json(pool)
        }
        routes.on(.delete, "/api/v1/pools/{pool}", role: .admin) { _, c in
            let name = try api.param(c, "pool")
            try await api.store.deletePool(name: name)
            return try json(Deleted(deleted: name))
        }
    }
}
