public import FlowKit
import Foundation

/// How the API authenticates and whom it lets in.
public struct APIConfig: Sendable {
    /// `read` reads; `admin` does everything; `events` only posts asset events (for the systems
    /// that start flows from outside, such as a bucket's notifications).
    public enum Role: String, Sendable { case read, admin, events }

    /// Tokens as `role:token`: the whole set of configured tokens, checked in memory and never stored.
    public var tokens: [(role: Role, token: String)]
    /// When true, GET endpoints need no token (writes always do).
    public var openReads: Bool
    /// Allowed browser origins (`*` for any); empty turns CORS off.
    public var corsOrigins: [String]
    public var maxBodyBytes: Int = 1 << 20
    /// Read timeouts and the per-address connection limit.
    public var connectionLimits = ConnectionLimits()
    /// How long a token read from the database is trusted before it is read again: a revoked
    /// or expired token stops working within this many seconds on every API process.
    public var tokenCacheSeconds: Double = 5
    /// The keys that seal connections and variables (`FLOWKIT_SECRET_KEY`): nil when unset, an
    /// error when set but unusable (their routes then answer 503 naming it).
    public var secretKeyring: Result<SecretKeyring?, SecretError> = .success(nil)
    /// The time of day of the API's writes and reads of "now" (tests move it).
    public var clock: any WallClock = SystemClock()
    /// Users who may exchange a name and password for a token at `POST /auth/token`, as
    /// Airflow's simple auth manager does (`FLOWKIT_AIRFLOW_USERS`: `name:role:password,…`).
    public var airflowUsers: [(name: String, role: Role, password: String)] = []
    /// The FlowKit version `GET /api/v2/version` answers.
    public var version = "unknown"

    public init(tokens: [(role: Role, token: String)] = [], openReads: Bool = true, corsOrigins: [String] = []) {
        self.tokens = tokens
        self.openReads = openReads
        self.corsOrigins = corsOrigins
    }

    /// Parses `FLOWKIT_API_TOKENS` (`admin:secret,read:other`).
    public static func parseTokens(_ text: String) throws -> [(role: Role, token: String)] {
        try text.split(separator: ",").map { item in
            let parts = item.split(separator: ":", maxSplits: 1).map(String.init)
            guard parts.count == 2, let role = Role(rawValue: parts[0].trimmingCharacters(in: .whitespaces)), !parts[1].isEmpty else {
                throw ConfigError("FLOWKIT_API_TOKENS: `\(item)` is not `admin:TOKEN` or `read:TOKEN`")
            }
            return (role, parts[1].trimmingCharacters(in: .whitespaces))
        }
    }
}

extension APIConfig {
    /// Parses `FLOWKIT_AIRFLOW_USERS` (`ci:admin:s3cret,dash:read:other`).
    public static func parseAirflowUsers(_ text: String) throws -> [(name: String, role: Role, password: String)] {
        try text.split(separator: ",").map { item in
            let parts = item.split(separator: ":", maxSplits: 2).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 3, !parts[0].isEmpty, let role = Role(rawValue: parts[1]), role != .events, parts[2].count >= 8 else {
                throw ConfigError("FLOWKIT_AIRFLOW_USERS: `\(item.split(separator: ":").prefix(2).joined(separator: ":")):…` is not `NAME:admin:PASSWORD` or `NAME:read:PASSWORD` with a password of 8 characters or more")
            }
            return (parts[0], role, parts[2])
        }
    }
}

/// A configuration value that cannot be used, naming the key and the expected form.
public struct ConfigError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

