public import Hummingbird
import Foundation

/// An API error: an HTTP status, a stable machine-readable code and a message for people.
public struct APIError: Error, Sendable {
    public let status: HTTPResponse.Status
    public let code: String
    public let message: String

    public init(_ status: HTTPResponse.Status, _ code: String, _ message: String) {
        self.status = status
        self.code = code
        self.message = message
    }

    static func badRequest(_ m: String) -> APIError { APIError(.badRequest, "bad_request", m) }
}
