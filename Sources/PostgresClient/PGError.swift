/// A PostgreSQL error: the server's message and SQLSTATE, or why the connection failed.
public struct PGError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable { case connection, query }
    public let kind: Kind
    public let message: String
    public let sqlState: String?

    public init(_ kind: Kind, _ message: String, sqlState: String? = nil) {
        self.kind = kind
        self.message = message.trimmingCharacters(in: .whitespacesAndNewlines)
        self.sqlState = sqlState
    }

    public var description: String {
        switch kind {
        case .connection: return "PostgreSQL connection failed: \(message)"
        case .query: return "PostgreSQL error\(sqlState.map { " \($0)" } ?? ""): \(message)"
        }
    }

    /// True for errors after which the connection must be re-established.
    public var isConnectionLoss: Bool {
        kind == .connection || (sqlState?.hasPrefix("08") ?? false) || sqlState == "57P01" || sqlState == "57P02" || sqlState == "57P03"
    }

    public var isUniqueViolation: Bool { sqlState == "23505" }
}
