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
