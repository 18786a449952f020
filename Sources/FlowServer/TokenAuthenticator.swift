import FlowKit
import Foundation
import Hummingbird
import Scheduler

/// Tokens made by `flowctl tokens create`: `fkt_<id>_<secret>`, 12 hex digits of id and 64 of
/// secret. Only HMAC-SHA-256(salt, secret) is stored, with 16 random bytes of salt per token.
public enum APITokens {
    public static let prefix = "fkt_"

    /// A new token: the text to hand to its user once, and what the database keeps.
    public static func generate() -> (text: String, id: String, salt: String, secretHash: String) {
        let id = SHA256.hexString(randomBytes(6))
        let secret = SHA256.hexString(randomBytes(32))
        let salt = SHA256.hexString(randomBytes(16))
        return ("\(prefix)\(id)_\(secret)", id, salt, hash(secret: secret, salt: salt))
    }

    /// The id and secret of a token in FlowKit's form; nil for anything else.
    public static func parse(_ token: String) -> (id: String, secret: String)? {
        guard token.hasPrefix(prefix) else { return nil }
        let parts = token.dropFirst(prefix.count).split(separator: "_", omittingEmptySubsequences: false)
        guard parts.count == 2, parts[0].count == 12, parts[1].count == 64,
              parts.allSatisfy({ $0.allSatisfy(\.isHexDigit) }) else { return nil }
        return (String(parts[0]), String(parts[1]))
    }

    public static func hash(secret: String, salt: String) -> String {
        SHA256.hexString(SHA256.hmac(key: Array(salt.utf8), message: Array(secret.utf8)))
    }

    /// Compares in time that does not depend on where the texts differ.
    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var diff: UInt8 = 0
        for i in a.indices { diff |= a[i] ^ b[i] }
        return diff == 0
    }

    static func randomBytes(_ n: Int) -> [UInt8] {
        var g = SystemRandomNumberGenerator()  // getrandom(2) on Linux
        return (0..<n).map { _ in UInt8.random(in: .min ... .max, using: &g) }
    }
}

/// Checks bearer tokens: those of the configuration in memory (they are the whole set of
/// configured tokens, never stored), and those of `flowctl tokens` in `api_tokens`, read again
/// after `tokenCacheSeconds` so that a revoked or expired token stops working within seconds.
final class TokenAuthenticator: @unchecked Sendable {
    let store: SchedulerStore
    let config: APIConfig
    /// Configured tokens as HMACs under a key of this process, compared in constant time.
    private let processKey = APITokens.randomBytes(32)
    private let configured: [(mac: [UInt8], role: APIConfig.Role)]

    private struct Cached {
        var credential: APITokenCredential?
        var fetchedAt: Date
    }
    private let lock = NSLock()
    private var cache: [String: Cached] = [:]
    private var usedNoted: [String: Date] = [:]

    init(store: SchedulerStore, config: APIConfig) {
        self.store = store
        self.config = config
        let key = processKey
        configured = config.tokens.map { (SHA256.hmac(key: key, message: Array($0.token.utf8)), $0.role) }
    }

    /// The role a bearer token grants at `now` and who it is, for the audit log: `token:NAME` for
    /// a token of `flowctl tokens`, `config:ROLE#N` for the Nth configured token.
    func identify(_ token: String, now: Date) async throws -> (role: APIConfig.Role, actor: String)? {
        let mac = SHA256.hmac(key: processKey, message: Array(token.utf8))
        var found: (APIConfig.Role, String)?
        for (i, c) in configured.enumerated() where APITokens.constantTimeEqual(c.mac, mac) { found = (c.role, "config:\(c.role.rawValue)#\(i + 1)") }
        if let found { return found }
        guard let (id, secret) = APITokens.parse(token) else { return nil }
        let cached = lock.withLock { cache[id] }
        let credential: APITokenCredential?
        if let cached, now.timeIntervalSince(cached.fetchedAt) < config.tokenCacheSeconds {
            credential = cached.credential
        } else {
            credential = try await store.apiTokenCredential(id: id)
            lock.withLock {
                if cache.count > 10_000 { cache.removeAll() }  // unknown ids are cached too: bound them
                cache[id] = Cached(credential: credential, fetchedAt: now)
            }
        }
        guard let credential, credential.record.isLive(at: now),
              APITokens.constantTimeEqual(Array(APITokens.hash(secret: secret, salt: credential.salt).utf8), Array(credential.secretHash.utf8))
        else { return nil }
        noteUsed(id, now: now)
        return APIConfig.Role(rawValue: credential.record.role).map { ($0, "token:\(credential.record.name)") }
    }

    /// Records the token's last use, at most once a minute, without holding up the request.
    private func noteUsed(_ id: String, now: Date) {
        let due = lock.withLock { () -> Bool in
            if let last = usedNoted[id], now.timeIntervalSince(last) < 60 { return false }
            if usedNoted.count > 10_000 { usedNoted.removeAll() }
            usedNoted[id] = now
            return true
        }
        if due { Task { [store] in try? await store.noteAPITokenUsed(id: id, now: now) } }
    }

    /// Checks the request's token for `role`; returns who made the request (`anonymous` for an
    /// open read without a token).
    @discardableResult
    func authorize(_ req: Request, needs role: APIConfig.Role) async throws -> String {
        if role == .read && config.openReads && req.headers[.authorization] == nil { return "anonymous" }
        if role == .read && config.openReads {
            let token = String((req.headers[.authorization] ?? "").dropFirst(7)).trimmingCharacters(in: .whitespaces)
            return (try? await identify(token, now: self.config.clock.now()))?.actor ?? "anonymous"
        }
        guard let header = req.headers[.authorization] else {
            throw APIError(.unauthorized, "unauthorized", "this endpoint needs a bearer token (Authorization: Bearer TOKEN; flowctl reads FLOWKIT_API_TOKEN)")
        }
        guard header.lowercased().hasPrefix("bearer ") else {
            throw APIError(.unauthorized, "unauthorized", "the Authorization header must be `Bearer TOKEN`")
        }
        let token = String(header.dropFirst(7)).trimmingCharacters(in: .whitespaces)
        guard let (have, actor) = try await self.identify(token, now: self.config.clock.now()) else {
            throw APIError(.unauthorized, "unauthorized", "the bearer token is not valid (unknown, revoked or expired)")
        }
        switch (role, have) {
        case (_, .admin), (.read, .read), (.events, .events): return actor
        case (.admin, _):
            throw APIError(.forbidden, "forbidden", "this endpoint needs an admin token; the token given is \(have.rawValue)-only")
        case (.events, _):
            throw APIError(.forbidden, "forbidden", "this endpoint needs an events or admin token; the token given is read-only")
        case (.read, _):
            throw APIError(.forbidden, "forbidden", "this endpoint needs a read or admin token; the token given may only post asset events")
        }
    }
}
