import FlowKit
import FlowKitTesting
@testable import FlowServer
import Flows
import Foundation
import Hummingbird
import PostgresClient
import RedisClient
import Scheduler
import Testing

@Suite("OpenAPI document")
struct OpenAPITests {
    @Test("every route is documented and every documented route exists")
    func routesMatch() throws {
        let doc = try JSONValue.parse(OpenAPIDocument.text)
        #expect(doc["openapi"] == "3.1.0")
        var documented = Set<String>()
        for (path, item) in doc["paths"]?.objectValue ?? [:] {
            for method in (item.objectValue ?? [:]).keys { documented.insert("\(method.uppercased()) \(path)") }
        }
        let api = FlowAPI(store: SchedulerStore(db: PGPool("postgres://127.0.0.1:9/none", size: 1)),
                          broker: SchedulerBroker(config: RedisConfig(), consumer: "api"), config: APIConfig())
        api.register(Router(context: FlowRequestContext.self))
        let routed = Set(api.access.routes.map { "\($0.method) \($0.path)" }).subtracting(OpenAPITests.dashboard(api))
        #expect(routed.subtracting(documented).isEmpty, "undocumented: \(routed.subtracting(documented))")
        #expect(documented.subtracting(routed).isEmpty, "documented but missing: \(documented.subtracting(routed))")
    }

    @Test("the router's real routes: each declares who may call it (a role, or why it needs no token), each API route is documented and listed for 405 answers, and nothing is documented that the router does not serve")
    func routerRoutes() throws {
        // Nothing connects: registering routes reaches neither PostgreSQL nor Redis.
        let api = FlowAPI(store: SchedulerStore(db: PGPool("postgres://127.0.0.1:9/none", size: 1)),
                          broker: SchedulerBroker(config: RedisConfig(), consumer: "api"), config: APIConfig())
        let router = Router(context: FlowRequestContext.self, options: .autoGenerateHeadEndpoints)
        api.register(router)
        let served = Set(router.routes.filter { $0.method != .head }.map { "\($0.method.rawValue) \($0.path)" })
        #expect(served.count > 40)
        let access = api.access.all
        let undeclared = served.filter { access[$0] == nil }
        #expect(undeclared.isEmpty, "routes that declare no role: \(undeclared.sorted())")
        for (route, a) in access { if case .open(let why) = a { #expect(!why.isEmpty, "\(route)") } }
        // Writes all need a token: only deliveries checked against their own secrets are open.
        let openWrites = access.filter { $0.key.hasPrefix("GET ") == false }.compactMap { k, a -> String? in
            if case .open = a { return k } else { return nil }
        }
        // …and Airflow's token exchange, which checks the name and password it is given.
        #expect(Set(openWrites) == ["POST /api/v1/hooks/{flow_id}", "POST /api/v1/assets/events/s3", "POST /auth/token"])
        let doc = try JSONValue.parse(OpenAPIDocument.text)
        var documented = Set<String>()
        for (path, item) in doc["paths"]?.objectValue ?? [:] {
            for method in (item.objectValue ?? [:]).keys { documented.insert("\(method.uppercased()) \(path)") }
        }
        let ui = Self.dashboard(api)
        #expect(ui == ["GET /", "GET /ui/{file}"])
        #expect(served.subtracting(ui) == documented, "served, not documented: \(served.subtracting(ui).subtracting(documented).sorted()); documented, not served: \(documented.subtracting(served).sorted())")
        // What the 405 answers read is what the resources declared: the router's own routes.
        #expect(served == Set(api.access.routes.map { "\($0.method) \($0.path)" }), "the declared routes differ from the router")
        // Roles in the document: a route the router guards with the admin role says so.
        for (route, a) in access where a == .role(.admin) && !ui.contains(route) {
            let parts = route.split(separator: " ", maxSplits: 1)
            let op = doc["paths"]?[String(parts[1])]?[parts[0].lowercased()]
            #expect(op?["responses"]?["403"] != nil || op?["security"] != nil, "\(route) needs an admin token but its document says nothing of it")
        }
    }
}

extension OpenAPITests {
    /// The dashboard's routes (not part of the JSON API, so not in its document).
    static func dashboard(_ api: FlowAPI) -> Set<String> {
        let access = RouteAccessTable()
        DashboardRoutes(api: api).register(APIRoutes(router: Router(context: FlowRequestContext.self), access: access, auth: api.auth))
        return Set(access.routes.map { "\($0.method) \($0.path)" })
    }
}

func hopCount(_ metrics: String) -> Int {
    metrics.split(separator: "\n").first { $0.hasPrefix("flowkit_hop_seconds_count ") }.flatMap { Int($0.split(separator: " ")[1]) } ?? 0
}
