import FlowKit
import Foundation
import Hummingbird
import HTTPTypes
import Scheduler

/// Flows: the list, one flow, pausing, triggering a run, a backfill, and the grid.
struct FlowRoutes: APIResource {
    let api: FlowAPI

    func register(_ routes: APIRoutes) {
        routes.on(.get, "/api/v1/flows", role: .read) { _, _ in
            async let flows = api.store.flows()
            async let errors = api.store.importErrors()
            return try json(FlowList(flows: try await flows, importErrors: try await errors))
        }
        routes.on(.get, "/api/v1/flows/{flow_id}", role: .read) { _, c in
            try json(try await api.store.flow(try api.param(c, "flow_id")))
        }
        for (path, paused) in [("/api/v1/flows/{flow_id}/pause", true), ("/api/v1/flows/{flow_id}/unpause", false)] {
            routes.on(.post, path, role: .admin) { _, c in
                let flow = try api.param(c, "flow_id")
                let r = try await api.store.setPaused(flowId: flow, paused: paused)
                return try json(r)
            }
        }
        routes.on(.post, "/api/v1/flows/{flow_id}/runs", role: .admin) { req, c in
            let body = try await api.body(TriggerBody.self, req, c, allowEmpty: true)
            let logical = try body.logicalDate.map { try apiInstant($0, "logicalDate") }
            // A client that lost the answer (a timeout, a reset, a 503) sends the same key again and
            // gets the run its first call made (200), never a second run.
            let key = try FlowAPI.idempotencyKey(req)
            let made = try await api.store.createRun(flowId: try api.param(c, "flow_id"), kind: "manual", conf: body.conf ?? [:],
                                                      logicalDate: logical, idempotencyKey: key, now: api.config.clock.now())
            return try json(made.run, status: made.created ? .created : .ok)
        }
        routes.on(.post, "/api/v1/flows/{flow_id}/backfill", role: .admin) { req, c in
            let body = try await api.body(BackfillBody.self, req, c)
            let runs = try await api.store.createBackfillRuns(flowId: try api.param(c, "flow_id"), from: try apiInstant(body.from, "from"),
                                                              to: try apiInstant(body.to, "to"), conf: body.conf ?? [:])
            return try json(BackfillCreated(runs: runs), status: .created)
        }
        routes.on(.get, "/api/v1/flows/{flow_id}/grid", role: .read) { req, c in
            let q = req.uri.queryParameters
            let limit = try FlowAPI.count(q.get("runs"), "runs", default: 25, max: 200)
            var state: String?
            if let st = q.get("state") {
                guard RunState(rawValue: String(st)) != nil else {
                    throw APIError.badRequest("`state` must be one of \(RunState.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                state = String(st)
            }
            return try json(try await api.store.grid(flowId: try api.param(c, "flow_id"), limit: limit, state: state))
        }
    }
}
