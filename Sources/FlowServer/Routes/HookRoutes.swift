import FlowKit
import Foundation
import Hummingbird
import HTTPTypes
import Scheduler

/// Flow webhooks: a run per delivery signed with the flow's own secret.
struct HookRoutes: APIResource {
    let api: FlowAPI

    func register(_ routes: APIRoutes) {
        routes.open(.post, "/api/v1/hooks/{flow_id}", why: "a flow's webhook: checked against the flow's own secret, not an API token") { req, ctx in
            try await api.hook(req, ctx)
        }
    }
}

extension FlowAPI {
    /// `POST /api/v1/hooks/{flow}`: checks the delivery against the flow's webhook secret (an
    /// HMAC signature of the body, or the secret as a bearer token), maps the JSON body onto the
    /// flow's params and starts a run; a repeated `Idempotency-Key` returns the first run (200).
    func hook(_ req: Request, _ c: FlowRequestContext) async throws -> Response {
        let flow = try param(c, "flow_id")
        var r = req
        let buffer = try await r.collectBody(upTo: config.maxBodyBytes)
        let raw = Array(buffer.readableBytesView)
        guard let hook = try await store.webhook(of: flow) else { throw NotFound("flow `\(flow)` has no webhook") }
        guard let secret = namedConnections()[hook.secret], !secret.isEmpty else {
            // Refused, not "unavailable": no delivery can be checked until the secret is set.
            throw APIError(.forbidden, "webhook_unconfigured",
                           "flow `\(flow)`'s webhook secret is not configured: set FLOWKIT_CONN_\(hook.secret.uppercased()) on the API")
        }
        let signature = req.headers[HTTPField.Name(WebhookSignature.header)!]
        let bearer = req.headers[.authorization].flatMap { $0.lowercased().hasPrefix("bearer ") ? String($0.dropFirst(7)) : nil }
        let expected = WebhookSignature.value(secret: secret, body: raw)
        guard (signature.map { APITokens.constantTimeEqual(Array($0.utf8), Array(expected.utf8)) } ?? false)
                || (bearer.map { APITokens.constantTimeEqual(Array($0.utf8), Array(secret.utf8)) } ?? false) else {
            throw APIError(.unauthorized, "unauthorized", "the delivery is not signed with flow `\(flow)`'s webhook secret (X-FlowKit-Signature: sha256=<HMAC-SHA256 of the body>, or Authorization: Bearer <secret>)")
        }
        var body: JSONValue = [:]
        if !raw.isEmpty {
            do { body = try JSONValue.parse(Data(raw)) } catch {
                throw APIError(.badRequest, "malformed_json", "the webhook body is not valid JSON: \(Self.describe(error))")
            }
        }
        guard let conf = body.objectValue else { throw APIError(.badRequest, "malformed_json", "the webhook body must be a JSON object of the flow's params") }
        let key = try Self.idempotencyKey(req)
        let (run, created) = try await WriteActor.$current.withValue("webhook:\(flow)") {
            try await store.createHookRun(flowId: flow, conf: conf, idempotencyKey: key, now: self.config.clock.now())
        }
        return try json(run, status: created ? .created : .ok)
    }
}
