import FlowKit
import Foundation
import Hummingbird
import PostgresClient
import Scheduler

/// Checks bearer tokens against the hashes in `api_tokens` (cached in memory).
final class TokenAuthenticator: @unchecked Sendable {
    let store: SchedulerStore
    let config: APIConfig
    private let lock = NSLock()
    private var known: [String: APIConfig.Role] = [:]

    init(store: SchedulerStore, config: APIConfig) {
        self.store = store
        self.config = config
        for t in config.tokens { known[hashToken(t.token)] = t.role }
    }

    func storeConfiguredTokens() async throws {
        let rows = config.tokens.map { (hashToken($0.token), $0.role.rawValue) }
        guard !rows.isEmpty else { return }
        try await store.db.run { s in
            for (hash, role) in rows {
                try s.query("""
                    INSERT INTO api_tokens (token_hash, name, role) VALUES ($1, $2, $3)
                    ON CONFLICT (token_hash) DO UPDATE SET role = EXCLUDED.role
                    """, [hash, "\(role)-token", role])
            }
        }
    }

    func authorize(_ req: Request, needs role: APIConfig.Role) async throws {
        if role == .read && config.openReads { return }
        guard let header = req.headers[.authorization] else {
            throw APIError(.unauthorized, "unauthorized", "this endpoint needs a bearer token (Authorization: Bearer TOKEN; flowctl reads FLOWKIT_API_TOKEN)")
        }
        guard header.lowercased().hasPrefix("bearer ") else {
            throw APIError(.unauthorized, "unauthorized", "the Authorization header must be `Bearer TOKEN`")
        }
        let hash = hashToken(String(header.dropFirst(7)).trimmingCharacters(in: .whitespaces))
        var found = lock.withLock { known[hash] }
        if found == nil {
            let stored = try await store.db.run { s in try s.query("SELECT role FROM api_tokens WHERE token_hash = $1", [hash]).first?.string("role") }
            found = stored.flatMap(APIConfig.Role.init(rawValue:))
            if let f = found { lock.withLock { known[hash] = f } }
        }
        guard let have = found else { throw APIError(.unauthorized, "unauthorized", "the bearer token is not valid") }
        if role == .admin && have != .admin {
            throw APIError(.forbidden, "forbidden", "this endpoint needs an admin token; the token given is read-only")
        }
    }
}
