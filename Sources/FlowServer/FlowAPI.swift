public import FlowKit
public import Foundation
public import Hummingbird
public import Logging
import HTTPTypes
public import Prometheus
public import Scheduler

/// The JSON HTTP API under `/api/v1`, plus `/health` and `/metrics`.
///
/// ```swift
/// let api = FlowAPI(store: store, broker: broker, config: APIConfig(tokens: [(.admin, "secret")]))
/// let app = api.application(host: "127.0.0.1", port: 8080)
/// try await app.runService()
/// ```
public struct FlowAPI: Sendable {
    public let store: SchedulerStore
    public let broker: SchedulerBroker
    public let config: APIConfig
    let auth: TokenAuthenticator
    let logger: Logger
    /// What the dashboard's live stream forwards: the schedulers' change notifications.
    public let feed: ChangeFeed
    /// Who may call each route, recorded as the resources declare them (`APIRoutes`): what the
    /// 405 answers read, and what a test compares with the router and the OpenAPI document.
    let access = RouteAccessTable()
    /// `GET /api/v1/overview`'s answer, shared for a second (see SharedAnswer).
    let overviewAnswer = SharedAnswer<Overview>(maxAge: 1)

    /// What `/metrics` serves: the gauges the API sets at each scrape, and whatever else this
    /// process records there (a scheduler in the same process: `SchedulerMetrics.prometheus`).
    public let registry: PrometheusCollectorRegistry

    public init(store: SchedulerStore, broker: SchedulerBroker, config: APIConfig, registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry(),
                logger: Logger = Logger(label: "flowkit.api")) {
        self.store = store
        self.broker = broker
        self.config = config
        self.registry = registry
        self.auth = TokenAuthenticator(store: store, config: config)
        self.logger = logger
        self.feed = ChangeFeed(store: store)
    }

    public func application(host: String, port: Int) -> some ApplicationProtocol {
        let router = self.router()
        let limits = config.connectionLimits
        let clients = ClientConnections(limit: limits.perClient)
        return Application(router: router,
                           server: .http1(configuration: .init(additionalChannelHandlers: [ConnectionGuard(limits: limits, clients: clients)])),
                           configuration: .init(address: .hostname(host, port: port), serverName: "FlowKit"),
                           logger: logger)
    }

    /// The API's resources, each declaring its routes.
    var resources: [any APIResource] {
        [HealthRoutes(api: self), FlowRoutes(api: self), RunRoutes(api: self), TaskRoutes(api: self), WorkerRoutes(api: self),
         PoolRoutes(api: self), AssetRoutes(api: self), HookRoutes(api: self), NotificationRoutes(api: self),
         BackfillRoutes(api: self), StoreRoutes(api: self), AuditRoutes(api: self), EventRoutes(api: self), DashboardRoutes(api: self),
         AirflowRoutes(api: self)]
    }

    /// The router: CORS when configured, the JSON answers for unknown routes and wrong methods,
    /// every error as the API's JSON error, then each resource's routes.
    func router() -> Router<FlowRequestContext> {
        // HEAD of every GET route answers as the GET, without its body (curl -I, probes).
        let router = Router(context: FlowRequestContext.self, options: .autoGenerateHeadEndpoints)
        if !config.corsOrigins.isEmpty {
            let origin: CORSMiddleware<FlowRequestContext>.AllowOriginExtended =
                config.corsOrigins == ["*"] ? .all : .custom(config.corsOrigins[0])
            router.add(middleware: CORSMiddleware(allowOrigin: origin, allowHeaders: [.accept, .authorization, .contentType, .origin],
                                                  allowMethods: [.get, .post, .options]))
        }
        router.add(middleware: RouteFallbackMiddleware(access: access))
        router.add(middleware: APIErrorMiddleware(maxBodyBytes: config.maxBodyBytes, logger: logger))
        register(router)
        return router
    }

    func register(_ router: Router<FlowRequestContext>) {
        let routes = APIRoutes(router: router, access: access, auth: auth)
        for r in resources { r.register(routes) }
    }

    /// The `Idempotency-Key` header of a write, checked: 1–200 bytes, or absent.
    static func idempotencyKey(_ req: Request) throws -> String? {
        guard let k = req.headers[HTTPField.Name("Idempotency-Key")!] else { return nil }
        guard !k.isEmpty, k.utf8.count <= 200 else { throw APIError.badRequest("Idempotency-Key must be 1–200 bytes") }
        return k
    }

    /// The answer to a write that committed and then has messages for the broker (stop a
    /// cancelled try, queue a cleared task). The write stands whatever Redis does, so the answer
    /// says it happened: 200 with `sent: true`, or, with Redis away, 202 with `sent: false` while
    /// the messages are retried in the background (`BrokerRetry`).
    func answer(afterWrite work: BrokerWork, run id: String, sent key: String) async throws -> Response {
        let delivered = await BrokerRetry.send(work, broker: broker, logger: logger, what: "\(key) for run \(id)")
        var body = try JSONValue.parse(apiEncoder.encode(try await store.run(id)))
        if case .object(var o) = body { o[key] = .bool(delivered); body = .object(o) }
        return try json(body, status: delivered ? .ok : .accepted)
    }

    /// The request body as a JSON object; `allowEmpty` reads an empty body as `{}`.
    func jsonBody(_ req: Request, _ ctx: FlowRequestContext, allowEmpty: Bool = true) async throws -> JSONValue {
        var r = req
        let buffer = try await r.collectBody(upTo: config.maxBodyBytes)
        if buffer.readableBytes == 0 {
            if allowEmpty { return [:] }
            throw APIError.badRequest("the request needs a JSON body")
        }
        let media = req.headers[.contentType].map { $0.split(separator: ";")[0].trimmingCharacters(in: .whitespaces).lowercased() }
        guard let media, media == "application/json" || (media.hasPrefix("application/") && media.hasSuffix("+json")) else {
            throw APIError(.unsupportedMediaType, "unsupported_media_type",
                           "the body must be JSON sent with `Content-Type: application/json`; this request has \(media.map { "`\($0)`" } ?? "no Content-Type")")
        }
        let data = Data(buffer.readableBytesView)
        let value: JSONValue
        do { value = try JSONValue.parse(data) } catch {
            throw APIError(.badRequest, "malformed_json", "the request body is not valid JSON: \(Self.describe(error))")
        }
        guard value.objectValue != nil else { throw APIError(.badRequest, "malformed_json", "the request body must be a JSON object") }
        return value
    }

    /// A count query parameter (`limit`, `runs`): 1…`max`, `default` when absent.
    static func count<S: StringProtocol>(_ value: S?, _ name: String, default d: Int, max: Int, min: Int = 1) throws -> Int {
        guard let value else { return d }
        guard let n = Int(value), (min...max).contains(n) else { throw APIError.badRequest("`\(name)` must be a whole number from \(min) to \(max)") }
        return n
    }

    /// The `run_id` path parameter: a whole run id, or a unique part of one — its start, or the
    /// short id after its last `__` (`runs show c1e0f568`). An ambiguous part lists the candidates.
    func runParam(_ c: FlowRequestContext) async throws -> String {
        try await store.resolveRunId(try param(c, "run_id"))
    }

    /// A path parameter, percent-decoded (`example%5Fsleep` is `example_sleep`).
    func param(_ c: FlowRequestContext, _ name: String) throws -> String {
        let raw = try c.parameters.require(name)
        guard let decoded = raw.removingPercentEncoding else {
            throw APIError.badRequest("the path segment `\(raw)` (\(name)) is not valid percent-encoding")
        }
        return decoded
    }

    static func describe(_ error: any Error) -> String {
        if case DecodingError.dataCorrupted(let c) = error {
            return (c.underlyingError.map { "\($0.localizedDescription)" }) ?? c.debugDescription
        }
        return "\(error)"
    }

}

extension FlowAPI {
    /// `flowkit_<name>`, kept in the registry between scrapes.
    func gauge(_ name: String, _ help: String, _ labels: [(String, String)] = []) -> Gauge {
        let d = MetricNameDescriptor(namespace: "flowkit", metricName: name, unitName: "", helpText: help)
        return labels.isEmpty ? registry.makeGauge(descriptor: d) : registry.makeGauge(descriptor: d, labels: labels)
    }
}

extension SchedulerMetrics {
    /// The scheduler's histograms in a Prometheus registry, with their buckets.
    public static func prometheus(_ registry: PrometheusCollectorRegistry) -> SchedulerMetrics {
        var factory = PrometheusMetricsFactory(registry: registry)
        let buckets = latencyBuckets.map { Duration.nanoseconds(Int64($0 * 1e9)) }
        for label in [hopLabel, eventBatchLabel, maintenanceLabel] { factory.durationHistogramBuckets[label] = buckets }
        return SchedulerMetrics(factory: factory)
    }
}

extension RunPage: JSONWritable {
    public func write(to w: inout JSONWriter) {
        w.object { w in
            w.key("nextCursor"); w.string(nextCursor)
            w.key("runs"); w.array { w in for r in runs { r.write(to: &w) } }
        }
    }
}

/// The run as `apiEncoder` writes it (sorted keys, absent optionals left out), without its cost:
/// `GET /api/v1/runs` spent half its time in `JSONEncoder`.
extension RunRecord: JSONWritable {
    public func write(to w: inout JSONWriter) {
        w.object { w in
            w.key("conf"); w.value(conf)
            w.key("createdAt"); w.date(createdAt)
            w.key("dataIntervalEnd"); w.date(dataIntervalEnd)
            w.key("dataIntervalStart"); w.date(dataIntervalStart)
            if let deadlineAt { w.key("deadlineAt"); w.date(deadlineAt) }
            if let deadlineState { w.key("deadlineState"); w.string(deadlineState) }
            if let endedAt { w.key("endedAt"); w.date(endedAt) }
            w.key("flowId"); w.string(flowId)
            w.key("flowVersion"); w.int(flowVersion)
            w.key("id"); w.int(id)
            w.key("logicalDate"); w.date(logicalDate)
            w.key("runId"); w.string(runId)
            if let stalledReason { w.key("stalledReason"); w.string(stalledReason) }
            if let startedAt { w.key("startedAt"); w.date(startedAt) }
            w.key("state"); w.string(state)
            if let taskCounts {
                w.key("taskCounts"); w.value(.object(taskCounts.mapValues { .int($0) }))
            }
            w.key("triggerKind"); w.string(triggerKind)
            if let triggeredBy { w.key("triggeredBy"); w.string(triggeredBy) }
        }
    }
}

let apiEncoder: JSONEncoder = {
    let e = JSONEncoder()
    e.dateEncodingStrategy = .custom { d, enc in
        var c = enc.singleValueContainer()
        try c.encode(formatInstant(d))
    }
    e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return e
}()

/// ISO-8601 with milliseconds, UTC.
public func formatInstant(_ d: Date) -> String {
    Instant.format(d, fractionDigits: 3)
}

func parseDate(_ s: String) -> Date? { Instant.parse(s) }

/// The instants the API takes: ISO-8601, from 1900 to 9999. Year 1 parses, but no schedule or
/// data interval means it, and it is usually a client's zero value sent by mistake.
let apiInstantRange = Instant.parse("1900-01-01T00:00:00Z")!...Instant.parse("9999-12-31T23:59:59.999Z")!

func apiInstant(_ s: String, _ key: String) throws -> Date {
    guard let d = parseDate(s) else { throw APIError.badRequest("`\(key)` must be an ISO-8601 instant, like 2026-11-30T06:00:00Z") }
    guard apiInstantRange.contains(d) else { throw APIError.badRequest("`\(key)` \(s) is outside the years 1900 to 9999 that FlowKit accepts") }
    return d
}

func json<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) throws -> Response {
    if let fast = value as? any JSONWritable {
        var w = JSONWriter(capacity: 16 * 1024)
        fast.write(to: &w)
        return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: w.bytes)))
    }
    let data = try apiEncoder.encode(value)
    return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
}

func errorJSON(_ e: APIError) -> Response {
    let body: JSONValue = ["error": .string(e.code), "message": .string(e.message)]
    return Response(status: e.status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: body.compactJSON)))
}
