import FlowKit
import FlowKitTesting
import FlowServer
import Flows
import Foundation
import Hummingbird
import PostgresClient
import RedisClient
import Scheduler
import WorkerRuntime
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The API, a scheduler and a worker running for real on a fresh database, on a free port.
final class LiveAPI: @unchecked Sendable {
    let port: Int
    let base: String
    let store: SchedulerStore
    var tasks: [Task<Void, any Error>] = []
    let worker: Worker
    static let admin = "admin-secret", reader = "read-secret"

    init(openReads: Bool = true) async throws {
        let url = try await TestServers.freshDatabase()
        let redis = try await TestServers.freshRedis()
        port = try freePort()
        base = "http://127.0.0.1:\(port)"
        var sc = SchedulerConfig(name: "api-test-scheduler")
        sc.maintenanceInterval = 0.3
        let daemon = SchedulerDaemon(databaseURL: url, redis: redis, flows: allFlows, config: sc)
        store = SchedulerStore(db: PGPool(url, size: 2))
        let api = FlowAPI(store: store, broker: SchedulerBroker(config: redis, consumer: "api"),
                          config: APIConfig(tokens: [(.admin, Self.admin), (.read, Self.reader)], openReads: openReads))
        try await api.prepare()
        var wc = WorkerConfig(name: "api-test-worker", queues: ["default"], concurrency: 2)
        wc.heartbeatInterval = 0.3
        wc.shutdownGrace = 0.5
        worker = Worker(redis: redis, flows: allFlows, config: wc)
        let app = api.application(host: "127.0.0.1", port: port)
        let w = worker
        tasks.append(Task { try await daemon.run() })
        tasks.append(Task { try await w.run() })
        tasks.append(Task { try await app.run() })
        try await eventually("API up and scheduler heart-beating") {
            (try? await self.request("GET", "/health").status) == 200
        }
    }

    func stop() async {
        worker.shutdown()
        for t in tasks { t.cancel() }
        for t in tasks { _ = await t.result }
    }

    struct Reply { let status: Int; let json: JSONValue; let text: String }

    func request(_ method: String, _ path: String, token: String? = nil, body: String? = nil) async throws -> Reply {
        var req = URLRequest(url: URL(string: base + path)!, timeoutInterval: 10)
        req.httpMethod = method
        if let token { req.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        if let body { req.httpBody = Data(body.utf8); req.setValue("application/json", forHTTPHeaderField: "Content-Type") }
        let (data, resp) = try await URLSession.shared.data(for: req)
        let text = String(decoding: data, as: UTF8.self)
        return Reply(status: (resp as! HTTPURLResponse).statusCode, json: (try? JSONValue.parse(data)) ?? .null, text: text)
    }
}

func withAPI(openReads: Bool = true, _ body: (LiveAPI) async throws -> Void) async throws {
    let api = try await LiveAPI(openReads: openReads)
    do { try await body(api) } catch { await api.stop(); throw error }
    await api.stop()
}

/// A TCP port nothing listens on right now.
func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    return Int(UInt16(bigEndian: addr.sin_port))
}
