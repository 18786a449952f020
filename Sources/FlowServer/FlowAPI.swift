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
         StoreRoutes(api: self), AuditRoutes(api: self), EventRoutes(api: self), DashboardRoutes(api: self)]
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

    /// The named connection whose value is the secret S3 notifications carry (`FLOWKIT_CONN_S3_EVENTS`).
    static let s3EventsSecret = "s3_events"

    /// `POST /api/v1/assets/events/s3`: an S3, MinIO or EventBridge notification of object writes
    /// becomes one asset event per new write (`s3://bucket/key`, with size and ETag in `extra`).
    /// Authenticated like a webhook — by the secret of connection `s3_events`, sent as a bearer
    /// token, as the whole `Authorization` header (MinIO's `auth_token`) or as an HMAC signature
    /// of the body — or by an API token with the events role. A delivery seen before records
    /// nothing and answers 200 (a first one 201), so a store's retries start nothing twice.
    func s3Events(_ req: Request, _ c: FlowRequestContext) async throws -> Response {
        var r = req
        let raw = Array(try await r.collectBody(upTo: config.maxBodyBytes).readableBytesView)
        var actor = "s3-notification"
        if let secret = namedConnections()[Self.s3EventsSecret], !secret.isEmpty,
           Self.carriesSecret(req, secret: secret, body: raw) {
            // The notification secret: nothing more to check.
        } else {
            do { actor = try await auth.authorize(req, needs: .events) } catch let e as APIError {
                throw APIError(e.status, e.code, "an S3 notification carries the secret of connection `\(Self.s3EventsSecret)` "
                               + "(FLOWKIT_CONN_S3_EVENTS on the API) or an events token: \(e.message)")
            }
        }
        let body: JSONValue
        do { body = try JSONValue.parse(Data(raw)) } catch {
            throw APIError(.badRequest, "malformed_json", "the S3 notification is not valid JSON: \(Self.describe(error))")
        }
        let parsed: S3Notification.Parsed
        do { parsed = try S3Notification.parse(body) } catch let e as S3Notification.Malformed {
            throw APIError(.badRequest, "bad_request", e.description)
        }
        let recorded = try await WriteActor.$current.withValue(actor) {
            try await store.recordS3Events(parsed.records, now: self.config.clock.now())
        }
        let answer: JSONValue = [
            "objects": .int(parsed.records.count), "duplicates": .int(recorded.duplicates), "ignored": .int(parsed.ignored),
            "eventIds": .array(recorded.eventIds.map { .int($0) }), "runs": .array(recorded.runs.map { .string($0.runId) }),
        ]
        return try json(answer, status: recorded.eventIds.isEmpty ? .ok : .created)
    }

    /// The secret as `Authorization: Bearer SECRET`, `Authorization: SECRET`, the password of
    /// `Authorization: Basic` (what an SNS HTTPS subscription sends for `https://user:SECRET@host/…`)
    /// or an `X-FlowKit-Signature` HMAC of the body, compared in constant time.
    static func carriesSecret(_ req: Request, secret: String, body: [UInt8]) -> Bool {
        let want = Array(secret.utf8)
        if let header = req.headers[.authorization] {
            var token = header
            if header.lowercased().hasPrefix("bearer ") {
                token = String(header.dropFirst(7)).trimmingCharacters(in: .whitespaces)
            } else if header.lowercased().hasPrefix("basic "),
                      let decoded = Data(base64Encoded: String(header.dropFirst(6)).trimmingCharacters(in: .whitespaces)),
                      let pair = String(data: decoded, encoding: .utf8), let colon = pair.firstIndex(of: ":") {
                token = String(pair[pair.index(after: colon)...])
            }
            if APITokens.constantTimeEqual(Array(token.utf8), want) { return true }
        }
        if let signature = req.headers[HTTPField.Name(WebhookSignature.header)!] {
            return APITokens.constantTimeEqual(Array(signature.utf8), Array(WebhookSignature.value(secret: secret, body: body).utf8))
        }
        return false
    }

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

    /// Server-sent events: one `data: {"channel": …, "payload": …}` per change the schedulers
    /// announce, a comment every 15 s so that a dead client is noticed, and an end after
    /// `maxSeconds` (clients reconnect).
    func eventStream(maxSeconds: Double) -> Response {
        let feed = self.feed
        let (id, changes) = feed.subscribe()
        let body = ResponseBody { writer in
            defer { feed.unsubscribe(id) }
            // "connected" once the feed listens: every change committed after it reaches this client.
            let listening = await feed.waitUntilListening()
            try await writer.write(ByteBuffer(string: "retry: 1000\n: connected\(listening ? "" : " (the database is not answering; changes will follow when it does)")\n\n"))
            // Durations, not times of day: on the monotonic clock.
            let end = ContinuousClock.now.advanced(by: .milliseconds(Int64(maxSeconds * 1000)))
            // A ticker joins the changes, so that the loop wakes for keep-alives and the end.
            let ticker = Task {
                while !Task.isCancelled && ContinuousClock.now < end {
                    let left = ContinuousClock.now.duration(to: end)
                    try? await Task.sleep(for: min(.seconds(15), max(.milliseconds(50), left)))
                    feed.poke(id)
                }
                feed.unsubscribe(id)
            }
            defer { ticker.cancel() }
            for await change in changes {
                if change.channel == ChangeFeed.keepAlive {
                    try await writer.write(ByteBuffer(string: ": keep-alive\n\n"))
                } else {
                    let data = JSONValue.object(["channel": .string(change.channel), "payload": .string(change.payload)]).compactJSON
                    try await writer.write(ByteBuffer(string: "data: \(data)\n\n"))
                }
                if ContinuousClock.now >= end { break }
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache",
                                               HTTPField.Name("X-Accel-Buffering")!: "no"], body: body)
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

    // MARK: - Health and metrics

    func health() async -> Response {
        var checks: [String: JSONValue] = [:]
        var ok = true
        do { try await store.ping(); checks["postgres"] = "ok" } catch { ok = false; checks["postgres"] = .string("down: \(error)") }
        do { try await broker.ping(); checks["redis"] = "ok" } catch { ok = false; checks["redis"] = .string("down: \(error)") }
        if let age = try? await store.schedulerHeartbeatAge(now: self.config.clock.now()) {
            let fresh = age < 30
            if !fresh { ok = false }
            checks["scheduler"] = fresh ? "ok" : .string("stale: last heartbeat \(Int(age))s ago")
        } else {
            ok = false
            checks["scheduler"] = checks["postgres"] == "ok" ? "down: no scheduler has ever run" : "unknown"
        }
        var fields: [String: JSONValue] = ["status": .string(ok ? "ok" : "unavailable"), "checks": .object(checks)]
        // Queue depths for the dashboard: the queues workers consume, and the default one.
        if checks["redis"] == "ok", checks["postgres"] == "ok", let workers = try? await store.workers(now: self.config.clock.now()) {
            let queues = Array(Set(workers.flatMap(\.queues) + [defaultQueue])).sorted()
            if let depths = try? await broker.queueDepths(queues) {
                fields["queues"] = .object(Dictionary(uniqueKeysWithValues: queues.map { ($0, JSONValue.int(depths[$0] ?? 0)) }))
            }
        }
        // Flows that could not be registered do not make the system unhealthy, but they are said.
        if checks["postgres"] == "ok", let errors = try? await store.importErrors(), !errors.isEmpty {
            fields["importErrors"] = .array(errors.map { ["flowId": .string($0.flowId), "message": .string($0.message)] })
        }
        // Notifications refused for their configuration (a missing connection or secret) do
        // not make the system unhealthy either, but no retry fixes them: they are said here.
        if checks["postgres"] == "ok", let problems = try? await store.configurationProblems(now: self.config.clock.now()), !problems.isEmpty {
            fields["configurationProblems"] = .array(problems.map {
                ["notifier": .string($0.notifier), "message": .string($0.error), "count": .int($0.count)]
            })
        }
        let body = JSONValue.object(fields)
        return Response(status: ok ? .ok : .serviceUnavailable, headers: [.contentType: "application/json"],
                        body: .init(byteBuffer: ByteBuffer(string: body.compactJSON)))
    }

    func metrics() async -> Response {
        // Gauges read at each scrape; the registry keeps them between scrapes.
        if let counts = try? await store.stateCounts() {
            for st in RunState.allCases {
                gauge("runs", "Flow runs by state.", [("state", st.rawValue)])
                    .set(Double(counts.runs[st.rawValue] ?? 0))
            }
            for st in ["queued", "running", "up_for_retry", "up_for_reschedule"] {
                gauge("task_instances", "Unfinished task instances by state.", [("state", st)])
                    .set(Double(counts.tasks[st] ?? 0))
            }
        }
        if let workers = try? await store.workers(now: self.config.clock.now()) {
            let queues = Array(Set(workers.flatMap(\.queues) + [defaultQueue])).sorted()
            if let depths = try? await broker.queueDepths(queues) {
                for q in queues {
                    gauge("queue_depth", "Messages waiting in a queue.", [("queue", q)])
                        .set(Double(depths[q] ?? 0))
                }
            }
            gauge("workers_online", "Workers heard from in the last 30 seconds.")
                .set(Double(workers.filter { $0.state == "online" && $0.heartbeatAgeSeconds < 30 }.count))
        }
        return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                        body: .init(byteBuffer: ByteBuffer(string: registry.emitToString())))
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
