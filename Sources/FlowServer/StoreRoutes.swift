import FlowKit
import Foundation
import Hummingbird
import Scheduler

/// `/api/v1/connections` and `/api/v1/variables`: the store of connections and variables.
/// Reads need a read token, writes an admin token; a connection's secret is never returned
/// once set, and a variable whose key looks secret is masked for all but admins.
extension FlowAPI {
    /// The keys that seal what is stored, or a 503 naming the variable to set.
    func keyring() throws -> SecretKeyring {
        switch config.secretKeyring {
        case .success(let k?): return k
        case .success(nil):
            throw APIError(.serviceUnavailable, "secret_key_unset",
                           "this API has no \(SecretKeyring.variable), so it cannot seal or open connections and variables: "
                           + "set it (`flowctl secret-key new` makes one) on the API, the schedulers and the workers")
        case .failure(let e): throw APIError(.serviceUnavailable, "secret_key_invalid", e.message)
        }
    }

    /// True when the request carries an admin token (readers see secret-looking variables masked).
    func isAdmin(_ req: Request) async -> Bool {
        guard req.headers[.authorization] != nil else { return false }
        return (try? await auth.authorize(req, needs: .admin)) != nil
    }

    static func shown(_ v: VariableRecord, reveal: Bool) -> VariableRecord {
        var out = v
        if !reveal && VariableRecord.isSensitive(v.key) { out.value = "***" }
        return out
    }
}

/// `/api/v1/connections` and `/api/v1/variables`.
struct StoreRoutes: APIResource {
    let api: FlowAPI

    func register(_ routes: APIRoutes) {
        routes.on(.get, "/api/v1/connections", role: .read) { _, _ in
            try json(ConnectionList(connections: try await api.store.connections()))
        }
        routes.on(.get, "/api/v1/connections/{name}", role: .read) { _, c in
            try json(try await api.store.connection(try api.param(c, "name")))
        }
        routes.on(.put, "/api/v1/connections/{name}", role: .admin) { req, c in
            let body = try await api.body(ConnectionBody.self, req, c)
            let keys = try api.keyring()
            let r = try await api.store.setConnection(name: try api.param(c, "name"), uri: body.uri, description: body.description,
                                                      keyring: keys, now: api.config.clock.now())
            return try json(r)
        }
        routes.on(.delete, "/api/v1/connections/{name}", role: .admin) { _, c in
            let name = try api.param(c, "name")
            try await api.store.deleteConnection(name, now: api.config.clock.now())
            return try json(Deleted(deleted: name))
        }
        routes.on(.get, "/api/v1/variables", role: .read) { req, _ in
            let reveal = await api.isAdmin(req)
            let all = try await api.store.variables(keyring: try api.keyring())
            return try json(VariableList(variables: all.map { FlowAPI.shown($0, reveal: reveal) }))
        }
        routes.on(.get, "/api/v1/variables/{key}", role: .read) { req, c in
            let reveal = await api.isAdmin(req)
            let v = try await api.store.variables(keyring: try api.keyring(), key: try api.param(c, "key"))
            return try json(FlowAPI.shown(v[0], reveal: reveal))
        }
        routes.on(.put, "/api/v1/variables/{key}", role: .admin) { req, c in
            let body = try await api.body(VariableBody.self, req, c)
            // A string is stored as it is; any other JSON value as its compact JSON text (what
            // `ctx.jsonVariable` parses back).
            guard let v = body.value, v != .null else { throw APIError.badRequest("`value` (a string, or any JSON value stored as its JSON text) is required") }
            let value = v.stringValue ?? v.compactJSON
            let r = try await api.store.setVariable(key: try api.param(c, "key"), value: value, description: body.description,
                                                     keyring: try api.keyring(), now: api.config.clock.now())
            return try json(r)
        }
        routes.on(.delete, "/api/v1/variables/{key}", role: .admin) { _, c in
            let key = try api.param(c, "key")
            try await api.store.deleteVariable(key, now: api.config.clock.now())
            return try json(Deleted(deleted: key))
        }
    }
}
