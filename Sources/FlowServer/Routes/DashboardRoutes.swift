import FlowKit
import Foundation
import Hummingbird
import HTTPTypes
import Scheduler

/// The dashboard's page and files.
struct DashboardRoutes: APIResource {
    let api: FlowAPI

    func register(_ routes: APIRoutes) {
        routes.open(.get, "/", why: "the dashboard's page; its API calls carry the token") { _, _ in FlowAPI.uiFile("index.html") }
        routes.open(.get, "/ui/{file}", why: "the dashboard's static files") { _, c in FlowAPI.uiFile(c.parameters.get("file") ?? "") }
    }
}

extension FlowAPI {
    /// A dashboard file, with headers that keep it to its own origin.
    static func uiFile(_ name: String) -> Response {
        guard let f = UIAssets.files[name] else {
            return errorJSON(APIError(.notFound, "not_found", "no dashboard file `\(name)`"))
        }
        return Response(status: .ok, headers: [
            .contentType: f.contentType, .cacheControl: "no-cache",
            HTTPField.Name("Content-Security-Policy")!: "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
            HTTPField.Name("X-Content-Type-Options")!: "nosniff", HTTPField.Name("Referrer-Policy")!: "no-referrer",
        ], body: .init(byteBuffer: ByteBuffer(string: f.body)))
    }
}
