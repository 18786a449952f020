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
