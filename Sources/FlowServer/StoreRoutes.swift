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

    /// An optional description from a body: a string of at most 1,000 bytes.
    static func description(_ body: JSONValue) throws -> String? {
        guard let d = body["description"], d != .null else { return nil }
        guard let text = d.stringValue else { throw APIError.badRequest("`description` must be a string") }
        return text
    }

    func registerStoreRoutes(_ router: Router<BasicRequestContext>) {
        handle(router, .get, "/api/v1/connections", role: .read) { _, _ in
            try json(["connections": try await self.store.connections()])
        }
        handle(router, .get, "/api/v1/connections/{name}", role: .read) { _, c in
            try json(try await self.store.connection(try self.param(c, "name")))
        }
        handle(router, .put, "/api/v1/connections/{name}", role: .admin) { req, c in
            let body = try await self.jsonBody(req, c, allowEmpty: false)
            guard let uri = body["uri"]?.stringValue else {
                throw APIError.badRequest("`uri` (a string: the connection's URL, e.g. postgresql://user:password@host:5432/db) is required")
            }
            let description = try Self.description(body)
            let keys = try self.keyring()
            let r = try await self.store.setConnection(name: try self.param(c, "name"), uri: uri, description: description, keyring: keys, now: Date())
            return try json(r)
        }
        handle(router, .delete, "/api/v1/connections/{name}", role: .admin) { _, c in
            let name = try self.param(c, "name")
            try await self.store.deleteConnection(name, now: Date())
            return try json(["deleted": JSONValue.string(name)])
        }
        handle(router, .get, "/api/v1/variables", role: .read) { req, _ in
            let reveal = await self.isAdmin(req)
            let all = try await self.store.variables(keyring: try self.keyring())
            return try json(["variables": all.map { Self.shown($0, reveal: reveal) }])
        }
        handle(router, .get, "/api/v1/variables/{key}", role: .read) { req, c in
            let reveal = await self.isAdmin(req)
            let v = try await self.store.variables(keyring: try self.keyring(), key: try self.param(c, "key"))
            return try json(Self.shown(v[0], reveal: reveal))
        }
        handle(router, .put, "/api/v1/variables/{key}", role: .admin) { req, c in
            let body = try await self.jsonBody(req, c, allowEmpty: false)
            // A string is stored as it is; any other JSON value as its compact JSON text (what
            // `ctx.jsonVariable` parses back).
            guard let v = body["value"], v != .null else { throw APIError.badRequest("`value` (a string, or any JSON value stored as its JSON text) is required") }
            let value = v.stringValue ?? v.compactJSON
            let r = try await self.store.setVariable(key: try self.param(c, "key"), value: value, description: try Self.description(body),
                                                     keyring: try self.keyring(), now: Date())
            return try json(r)
        }
        handle(router, .delete, "/api/v1/variables/{key}", role: .admin) { _, c in
            let key = try self.param(c, "key")
            try await self.store.deleteVariable(key, now: Date())
            return try json(["deleted": JSONValue.string(key)])
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
