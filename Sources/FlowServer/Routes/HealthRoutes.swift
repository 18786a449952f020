import FlowKit
import Foundation
import Hummingbird
import HTTPTypes
import Scheduler

/// `/health`, `/api/v1/health`, `/metrics` and the OpenAPI document: open to probes and scrapers.
struct HealthRoutes: APIResource {
    let api: FlowAPI

    func register(_ routes: APIRoutes) {
        routes.open(.get, "/health", why: "a probe for load balancers and orchestrators") { _, _ in await api.health() }
        routes.open(.get, "/api/v1/health", why: "a probe for load balancers and orchestrators") { _, _ in await api.health() }
        routes.open(.get, "/metrics", why: "Prometheus scrapes it (bind the API to a private address)") { _, _ in await api.metrics() }
        routes.open(.get, "/api/v1/openapi.json", why: "the API's own description") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: OpenAPIDocument.text)))
        }
    }
}
