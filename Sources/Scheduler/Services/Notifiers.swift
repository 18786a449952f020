import FlowKit
import FlowJSON
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A delivery that did not go through, with the receiver's status code when it answered.
///
/// A configuration problem (no such connection, no secret, a malformed URL) is not an outage:
/// no retry can fix it, so the notification fails at once, its error starting with
/// `DeliveryError.configurationPrefix`, and `/health` counts it.
public struct DeliveryError: Error, CustomStringConvertible, Sendable {
    public let statusCode: Int?
    public let description: String
    public let isConfiguration: Bool
    public init(_ description: String, statusCode: Int? = nil) {
        self.description = description; self.statusCode = statusCode; self.isConfiguration = false
    }
    init(configuration description: String) {
        self.description = Self.configurationPrefix + description; self.statusCode = nil; self.isConfiguration = true
    }
    /// How a configuration problem's error starts, in the notification and in `/health`.
    public static let configurationPrefix = "configuration problem: "
}

/// POSTs `body` as JSON with the given headers; a non-2xx answer or no answer throws.
func postJSON(_ url: String, body: Data, headers: [String: String], timeout: Double) async throws -> Int {
    guard let u = URL(string: url), ["http", "https"].contains(u.scheme ?? "") else { throw DeliveryError(configuration: "`\(url)` is not an http(s) URL") }
    var req = URLRequest(url: u, timeoutInterval: timeout)
    req.httpMethod = "POST"
    req.httpBody = body
    req.setValue("application/json", forHTTPHeaderField: "Content-Type")
    for (k, v) in headers { req.setValue(v, forHTTPHeaderField: k) }
    let response: URLResponse
    do { (_, response) = try await URLSession.shared.data(for: req) } catch {
        throw DeliveryError("\(u.host ?? url) did not answer: \(error.localizedDescription)")
    }
    let status = (response as? HTTPURLResponse)?.statusCode ?? 0
    guard (200..<300).contains(status) else { throw DeliveryError("\(u.host ?? url) answered HTTP \(status)", statusCode: status) }
    return status
}

/// The URL of a named connection, or an error naming the variable to set.
func connectionURL(_ name: String, _ connections: [String: String]) throws -> String {
    guard let url = connections[name] else { throw DeliveryError(configuration: "no connection named `\(name)`: set FLOWKIT_CONN_\(name.uppercased()) on the scheduler") }
    return url
}

/// `.webhook(name)`: the message as JSON, POSTed to `FLOWKIT_CONN_<NAME>` and signed with
/// HMAC-SHA256 of the exact body under `FLOWKIT_CONN_<NAME>_SECRET`:
/// `X-FlowKit-Signature: sha256=<hex>`. `X-FlowKit-Delivery` carries the delivery id (stable
/// across attempts: deduplicate on it) and `X-FlowKit-Event` the event.
struct WebhookNotifier {
    let connection: String

    func deliver(_ m: NotificationMessage, connections: [String: String], timeout: Double) async throws -> Int {
        let url = try connectionURL(connection, connections)
        guard let secret = connections["\(connection)_secret"], !secret.isEmpty else {
            throw DeliveryError(configuration: "webhook `\(connection)` has no secret: set FLOWKIT_CONN_\(connection.uppercased())_SECRET on the scheduler")
        }
        let body = Data(try StableJSON.encode(m))
        return try await postJSON(url, body: body, headers: [
            WebhookSignature.header: WebhookSignature.value(secret: secret, body: Array(body)),
            "X-FlowKit-Delivery": m.deliveryId, "X-FlowKit-Event": m.event.rawValue,
        ], timeout: timeout)
    }
}

/// `.slack(name)`: a Slack incoming webhook message with the flow, run, task, try, error, the
/// last log lines and a link to the run.
struct SlackNotifier {
    let connection: String

    func deliver(_ m: NotificationMessage, connections: [String: String], timeout: Double) async throws -> Int {
        var text = "*FlowKit* \(m.event.rawValue.replacingOccurrences(of: "_", with: " ")): \(m.summary)"
        if !m.logTail.isEmpty { text += "\n```\n" + m.logTail.suffix(10).joined(separator: "\n") + "\n```" }
        if let link = m.runURL { text += "\n<\(link)|the run>" }
        let body = Data(JSONValue.object(["text": .string(text)]).compactJSON.utf8)
        return try await postJSON(try connectionURL(connection, connections), body: body, headers: [:], timeout: timeout)
    }
}
