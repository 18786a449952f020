import FlowKit
import Foundation
import Hummingbird
import HTTPTypes
import Scheduler

/// Assets and their events, posted by clients or by S3 notifications.
struct AssetRoutes: APIResource {
    let api: FlowAPI

    func register(_ routes: APIRoutes) {
        routes.on(.get, "/api/v1/assets", role: .read) { _, _ in
            try json(AssetList(assets: try await api.store.assets()))
        }
        routes.on(.get, "/api/v1/assets/events", role: .read) { req, _ in
            let q = req.uri.queryParameters
            guard let uri = q.get("uri").map({ String($0) }), !uri.isEmpty else { throw APIError.badRequest("`uri` names the asset: ?uri=scheme://name") }
            let limit = try FlowAPI.count(q.get("limit"), "limit", default: 100, max: 1000)
            return try json(AssetEventList(events: try await api.store.assetEvents(uri: uri, limit: limit)))
        }
        routes.on(.post, "/api/v1/assets/events", role: .events) { req, c in
            let body = try await api.body(AssetEventBody.self, req, c)
            let (id, runs) = try await api.store.postAssetEvent(uri: body.uri, extra: .object(body.extra ?? [:]), now: api.config.clock.now())
            return try json(AssetEventPosted(eventId: id, runs: runs.map(\.runId)), status: .created)
        }
        routes.open(.post, "/api/v1/assets/events/s3",
             why: "bucket notifications: checked against the notification secret, or an events token") { req, ctx in
            try await api.s3Events(req, ctx)
        }
    }
}

extension FlowAPI {
    /// The named connection whose value is the secret S3 notifications carry (`FLOWKIT_CONN_S3_EVENTS`).
    static let s3EventsSecret = "s3_events"

    /// `POST /api/v1/assets/events/s3`: an S3, MinIO or EventBridge notification of object writes
    /// becomes one asset event per new write (`s3://bucket/key`, with size and ETag in `extra`).
    /// Authenticated like a webhook — by the secret of connection `s3_events`, sent as a bearer
    /// token, as the whole `Authorization` header (MinIO's `auth_token`) or as an HMAC signature
    /// of the body — or by an API token with the events role. A delivery seen before records
    /// nothing and answers 200 (a first one 201), so a store's retries start nothing twice.
    func s3Events(_ req: Request, _ c: FlowRequestContext) async throws -> Response {
        var r = req
        let raw = Array(try await r.collectBody(upTo: config.maxBodyBytes).readableBytesView)
        var actor = "s3-notification"
        if let secret = namedConnections()[Self.s3EventsSecret], !secret.isEmpty,
           Self.carriesSecret(req, secret: secret, body: raw) {
            // The notification secret: nothing more to check.
        } else {
            do { actor = try await auth.authorize(req, needs: .events) } catch let e as APIError {
                throw APIError(e.status, e.code, "an S3 notification carries the secret of connection `\(Self.s3EventsSecret)` "
                               + "(FLOWKIT_CONN_S3_EVENTS on the API) or an events token: \(e.message)")
            }
        }
        let body: JSONValue
        do { body = try JSONValue.parse(Data(raw)) } catch {
            throw APIError(.badRequest, "malformed_json", "the S3 notification is not valid JSON: \(Self.describe(error))")
        }
        let parsed: S3Notification.Parsed
        do { parsed = try S3Notification.parse(body) } catch let e as S3Notification.Malformed {
            throw APIError(.badRequest, "bad_request", e.description)
        }
        let recorded = try await WriteActor.$current.withValue(actor) {
            try await store.recordS3Events(parsed.records, now: self.config.clock.now())
        }
        let answer: JSONValue = [
            "objects": .int(parsed.records.count), "duplicates": .int(recorded.duplicates), "ignored": .int(parsed.ignored),
            "eventIds": .array(recorded.eventIds.map { .int($0) }), "runs": .array(recorded.runs.map { .string($0.runId) }),
        ]
        return try json(answer, status: recorded.eventIds.isEmpty ? .ok : .created)
    }

    /// The secret as `Authorization: Bearer SECRET`, `Authorization: SECRET`, the password of
    /// `Authorization: Basic` (what an SNS HTTPS subscription sends for `https://user:SECRET@host/…`)
    /// or an `X-FlowKit-Signature` HMAC of the body, compared in constant time.
    static func carriesSecret(_ req: Request, secret: String, body: [UInt8]) -> Bool {
        let want = Array(secret.utf8)
        if let header = req.headers[.authorization] {
            var token = header
            if header.lowercased().hasPrefix("bearer ") {
                token = String(header.dropFirst(7)).trimmingCharacters(in: .whitespaces)
            } else if header.lowercased().hasPrefix("basic "),
                      let decoded = Data(base64Encoded: String(header.dropFirst(6)).trimmingCharacters(in: .whitespaces)),
                      let pair = String(data: decoded, encoding: .utf8), let colon = pair.firstIndex(of: ":") {
                token = String(pair[pair.index(after: colon)...])
            }
            if APITokens.constantTimeEqual(Array(token.utf8), want) { return true }
        }
        if let signature = req.headers[HTTPField.Name(WebhookSignature.header)!] {
            return APITokens.constantTimeEqual(Array(signature.utf8), Array(WebhookSignature.value(secret: secret, body: body).utf8))
        }
        return false
    }
}
