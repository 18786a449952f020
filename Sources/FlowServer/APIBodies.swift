public import FlowKit
import Foundation
import Hummingbird
import NIOCore

/// A request body the API decodes: a `Decodable` type whose fields may come in camelCase or
/// snake_case (`logicalDate`, `logical_date`), with what each field must be, for errors that
/// name it: "`conf` must be a JSON object", "`uri` (…) is required".
protocol APIBody: Decodable {
    /// What each field holds, in words, by its camelCase name.
    static var fields: [String: String] { get }
}

/// `POST /api/v1/flows/{flow_id}/runs`.
struct TriggerBody: APIBody {
    var conf: [String: JSONValue]?
    var logicalDate: String?
    static let fields = ["conf": "a JSON object", "logicalDate": "an ISO-8601 instant"]
}

/// `POST /api/v1/flows/{flow_id}/backfill`.
struct BackfillBody: APIBody {
    var from: String
    var to: String
    var conf: [String: JSONValue]?
    static let fields = ["from": "an ISO-8601 instant", "to": "an ISO-8601 instant", "conf": "a JSON object"]
}

/// `POST /api/v1/runs/{run_id}/clear`.
struct ClearBody: APIBody {
    var taskIds: [String]?
    var onlyFailed: Bool?
    static let fields = ["taskIds": "an array of task ids", "onlyFailed": "true or false"]
}

/// `POST /api/v1/runs/{run_id}/tasks/{task_id}/mark`.
struct MarkBody: APIBody {
    var state: String
    static let fields = ["state": "\"success\" or \"failed\""]
}

/// `POST /api/v1/assets/events`.
struct AssetEventBody: APIBody {
    var uri: String
    var extra: [String: JSONValue]?
    static let fields = ["uri": "a string, scheme://name", "extra": "a JSON object"]
}

/// `PUT /api/v1/pools/{pool}`.
struct PoolBody: APIBody {
    var slots: Int
    var description: String?
    static let fields = ["slots": "a whole number of slots, 0 or more",
                         "description": "a string of at most 1,000 bytes, without NUL characters"]
}

/// `PUT /api/v1/connections/{name}`.
struct ConnectionBody: APIBody {
    var uri: String
    var description: String?
    static let fields = ["uri": "a string: the connection's URL, e.g. postgresql://user:password@host:5432/db",
                         "description": "a string"]
}

/// `PUT /api/v1/variables/{key}`: any JSON value (a string is kept as it is, anything else as its JSON text).
struct VariableBody: APIBody {
    var value: JSONValue?
    var description: String?
    static let fields = ["value": "a string, or any JSON value stored as its JSON text", "description": "a string"]
}

extension FlowAPI {
    /// The request body decoded as `T`. Malformed JSON, a body that is not a JSON object, a
    /// field of the wrong type or a required field missing is a 400 naming what is wrong.
    func body<T: APIBody>(_ type: T.Type, _ req: Request, _ ctx: FlowRequestContext, allowEmpty: Bool = false) async throws -> T {
        let value = try await jsonBody(req, ctx, allowEmpty: allowEmpty)
        do {
            return try Self.bodyDecoder.decode(T.self, from: Data(value.compactJSON.utf8))
        } catch let e as DecodingError {
            throw APIError.badRequest(Self.describe(e, fields: T.fields))
        }
    }

    static let bodyDecoder: JSONDecoder = {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        return d
    }()

    /// A decoding error as the field it is about and what that field must be.
    static func describe(_ e: DecodingError, fields: [String: String]) -> String {
        func name(_ path: [any CodingKey]) -> String { path.map(\.stringValue).joined(separator: ".") }
        func what(_ path: [any CodingKey]) -> String { path.first.flatMap { fields[$0.stringValue] } ?? "of another type" }
        switch e {
        case .keyNotFound(let key, let c):
            let path = c.codingPath + [key]
            return "`\(name(path))` (\(what(path))) is required"
        case .valueNotFound(_, let c), .typeMismatch(_, let c):
            return "`\(name(c.codingPath))` must be \(what(c.codingPath))"
        case .dataCorrupted(let c):
            return c.codingPath.isEmpty ? "the request body is not what this endpoint takes: \(c.debugDescription)"
                : "`\(name(c.codingPath))` must be \(what(c.codingPath))"
        @unknown default:
            return "the request body is not what this endpoint takes"
        }
    }

    /// A description field: at most 1,000 bytes, no NUL characters.
    static func checkedDescription(_ d: String?) throws -> String? {
        guard let d else { return nil }
        guard d.utf8.count <= 1000, !d.utf8.contains(0) else {
            throw APIError.badRequest("`description` must be a string of at most 1,000 bytes, without NUL characters")
        }
        return d
    }
}
