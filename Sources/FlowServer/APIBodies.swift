public import FlowKit
import Foundation
import Hummingbird
import Scheduler
import NIOCore

/// A request body the API decodes: a `Decodable` type whose fields may come in camelCase or
/// snake_case (`logicalDate`, `logical_date`), with what each field must be, for errors that
/// name it: "`conf` must be a JSON object", "`uri` (…) is required".
protocol APIBody: Decodable {
    /// What each field holds, in words, by its camelCase name.
    static var fields: [String: String] { get }
}

extension TriggerBody: APIBody {}
extension BackfillBody: APIBody {}
extension BackfillCreateBody: APIBody {}
extension DecisionBody: APIBody {}
extension ClearBody: APIBody {}
extension MarkBody: APIBody {}
extension AssetEventBody: APIBody {}
extension PoolBody: APIBody {}
extension ConnectionBody: APIBody {}
extension VariableBody: APIBody {}

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
