import FlowKit
import FlowKitTesting
import FlowServer
import Flows
import Foundation
import Hummingbird
import PostgresClient
import Prometheus
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
    let databaseURL: String
    let redisConfig: RedisConfig
    var tasks: [Task<Void, any Error>] = []
    let worker: Worker
    static let admin = "admin-secret", reader = "read-secret", events = "events-secret"
    /// The key of `FLOWKIT_SECRET_KEY` the API and the worker share in tests.
    static let secretKey = "q2NV0bYQm6Z0E5m3vF1hVj0k0q3kq7K1c9m9cW8mC1o="

    /// `workerEnvironment`: what the worker reads its own connections, variables and keys from
    /// (default: this process's environment and the test key).
    init(openReads: Bool = true, configure: (inout APIConfig) -> Void = { _ in }, flows: [Flow] = allFlows,
         importErrors: [FlowImportError] = [], workerFlows: [Flow]? = nil, workerImportErrors: [FlowImportError] = [],
         workerEnvironment: [String: String]? = nil) async throws {
        let url = try await TestServers.freshDatabase()
        let redis = try await TestServers.freshRedis()
        databaseURL = url
        redisConfig = redis
        port = try freePort()
        base = "http://127.0.0.1:\(port)"
        var sc = SchedulerConfig(name: "api-test-scheduler")
        sc.maintenanceInterval = 0.3
        sc.stalledRunAfter = 1
        let registry = PrometheusCollectorRegistry()  // one per process, as in standalone
        let daemon = SchedulerDaemon(databaseURL: url, redis: redis, flows: flows, config: sc, metrics: .prometheus(registry),
                                     importErrors: importErrors)
        store = SchedulerStore(db: PGPool(url, size: 2))
        var config = APIConfig(tokens: [(.admin, Self.admin), (.read, Self.reader), (.events, Self.events)], openReads: openReads)
        config.secretKeyring = .success(try SecretKeyring(Self.secretKey))
        configure(&config)
        let api = FlowAPI(store: store, broker: SchedulerBroker(config: redis, consumer: "api"), config: config, registry: registry)
        var wc = WorkerConfig(name: "api-test-worker", queues: ["default"], concurrency: 2)
        wc.heartbeatInterval = 0.3
        wc.shutdownGrace = 0.5
        wc.environment = workerEnvironment ?? ProcessInfo.processInfo.environment.merging([SecretKeyring.variable: Self.secretKey]) { _, new in new }
        worker = Worker(redis: redis, flows: workerFlows ?? flows, config: wc, importErrors: workerImportErrors)
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

    struct Reply {
        let status: Int; let json: JSONValue; let text: String
        var headers: [String: String] = [:]
        func header(_ name: String) -> String? { headers.first { $0.key.lowercased() == name.lowercased() }?.value }
    }

    func request(_ method: String, _ path: String, token: String? = nil, body: String? = nil,
                 contentType: String = "application/json", headers: [String: String] = [:]) async throws -> Reply {
        try await Self.request(base: base, method, path, token: token, body: body, contentType: contentType, headers: headers)
    }

    static func request(base: String, _ method: String, _ path: String, token: String? = nil, body: String? = nil,
                        contentType: String = "application/json", headers: [String: String] = [:]) async throws -> Reply {
        var req = URLRequest(url: URL(string: base + path)!, timeoutInterval: 10)
        req.httpMethod = method
        for (k, v) in headers { req.setValue(v, forHTTPHeaderField: k) }
        if let token { req.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        if let body { req.httpBody = Data(body.utf8); req.setValue(contentType, forHTTPHeaderField: "Content-Type") }
        let (data, resp) = try await URLSession.shared.data(for: req)
        let text = String(decoding: data, as: UTF8.self)
        let http = resp as! HTTPURLResponse
        let headers = Dictionary(http.allHeaderFields.map { ("\($0.key)", "\($0.value)") }, uniquingKeysWith: { a, _ in a })
        return Reply(status: http.statusCode, json: (try? JSONValue.parse(data)) ?? .null, text: text, headers: headers)
    }
}

func withAPI(openReads: Bool = true, configure: (inout APIConfig) -> Void = { _ in }, flows: [Flow] = allFlows,
             _ body: (LiveAPI) async throws -> Void) async throws {
    let api = try await LiveAPI(openReads: openReads, configure: configure, flows: flows)
    do { try await body(api) } catch { await api.stop(); throw error }
    await api.stop()
}

/// A plain TCP connection to the API, for what URLSession will not do: partial headers, many
/// idle connections.
final class RawConnection {
    let fd: Int32

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = UInt16(port).bigEndian
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if rc != 0 { close(fd); throw POSIXError(.ECONNREFUSED) }
    }

    deinit { close(fd) }

    func send(_ text: String) {
        _ = text.utf8CString.withUnsafeBufferPointer { b in Glibc.send(fd, b.baseAddress, b.count - 1, Int32(MSG_NOSIGNAL)) }
    }

    /// What `read(until:_:)` has received so far.
    private(set) var received = ""

    /// Reads until `condition` holds for everything received, or `timeout` passes (a stream
    /// that never closes: server-sent events).
    func read(until timeout: Double, _ condition: (String) -> Bool) -> Bool {
        var tv = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var buf = [UInt8](repeating: 0, count: 4096)
        let end = Date().addingTimeInterval(timeout)
        while Date() < end && !condition(received) {
            let n = recv(fd, &buf, buf.count, 0)
            if n > 0 { received += String(decoding: buf[0..<n], as: UTF8.self) } else if n == 0 { break }
        }
        return condition(received)
    }

    /// Reads until the server closes or `seconds` pass: the text, and whether it closed.
    func readUntilClosed(seconds: Double) -> (text: String, closed: Bool) {
        var tv = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var out = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 4096)
        let end = Date().addingTimeInterval(seconds)
        while Date() < end {
            let n = recv(fd, &buf, buf.count, 0)
            if n == 0 { return (String(decoding: out, as: UTF8.self), true) }
            if n > 0 { out += buf[0..<n] } else if errno != EAGAIN && errno != EWOULDBLOCK { return (String(decoding: out, as: UTF8.self), true) }
        }
        return (String(decoding: out, as: UTF8.self), false)
    }
}
