import Foundation
/// A PostgreSQL error: the server's message and SQLSTATE, or why the connection failed.
public struct PGError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable {
        /// The connection could not be made or broke.
        case connection
        /// The server refused a statement.
        case query
        /// The server did not answer within the connection's `replyTimeout`: the connection is dropped.
        case timeout
        /// A caller broke the connection's contract (a `run` that left a transaction open).
        case misuse
    }
    public let kind: Kind
    public let message: String
    public let sqlState: String?
    /// No session existed, so nothing of the call reached the server: trying again cannot do
    /// anything twice.
    public let notConnected: Bool
    /// The server's error fields, each on its own (a statement error's message also quotes the
    /// statement's text; these do not): primary message, detail, hint, context, and the
    /// position (from 1, in characters) in the statement where it went wrong.
    public var fields: Fields?

    public struct Fields: Sendable, Equatable {
        public var primary: String
        public var detail: String?
        public var hint: String?
        public var context: String?
        public var position: Int?
    }

    public init(_ kind: Kind, _ message: String, sqlState: String? = nil, notConnected: Bool = false, fields: Fields? = nil) {
        self.kind = kind
        self.message = message.trimmingCharacters(in: .whitespacesAndNewlines)
        self.sqlState = sqlState
        self.notConnected = notConnected
        self.fields = fields
    }

    public var description: String {
        switch kind {
        case .connection: return "PostgreSQL connection failed: \(message)"
        case .query: return "PostgreSQL error\(sqlState.map { " \($0)" } ?? ""): \(message)"
        case .timeout: return "PostgreSQL did not answer in time: \(message)"
        case .misuse: return "PostgreSQL client misuse: \(message)"
        }
    }

    /// True for errors after which the connection must be re-established.
    public var isConnectionLoss: Bool {
        kind == .connection || kind == .timeout || (sqlState?.hasPrefix("08") ?? false)
            || sqlState == "57P01" || sqlState == "57P02" || sqlState == "57P03" || sqlState == "25P03"
    }

    /// The server cancelled the statement: `statement_timeout` or `lock_timeout` ran out.
    public var isStatementTimeout: Bool { sqlState == "57014" || sqlState == "55P03" }

    public var isUniqueViolation: Bool { sqlState == "23505" }
}
