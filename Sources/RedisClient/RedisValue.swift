/// A Redis reply.
public enum RedisValue: Sendable, Equatable {
    case null
    case string(String)
    case status(String)
    case integer(Int)
    case array([RedisValue])
    case error(String)

    public var string: String? {
        switch self {
        case .string(let s), .status(let s): return s
        case .integer(let i): return String(i)
        default: return nil
        }
    }
    public var int: Int? {
        switch self {
        case .integer(let i): return i
        case .string(let s): return Int(s)
        default: return nil
        }
    }
    public var array: [RedisValue]? { if case .array(let a) = self { return a }; return nil }
    public var isNull: Bool { self == .null }
}

/// A Redis failure: the connection, or an error reply.
public struct RedisError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable { case connection, reply, protocolError }
    public let kind: Kind
    public let message: String
    public init(_ kind: Kind, _ message: String) { self.kind = kind; self.message = message }
    public var description: String {
        switch kind {
        case .connection: return "Redis connection failed: \(message)"
        case .reply: return "Redis error: \(message)"
        case .protocolError: return "Redis protocol: \(message)"
        }
    }
}
