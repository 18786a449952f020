public import FlowKit
public import Foundation
public import Hummingbird
public import Logging
import CeleryProtocol
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
    /// Who may call each registered route (`handle` and `open` record it): a test checks that
    /// every route the router serves has an entry.
    let access = RouteAccessTable()

    /// Every route: the OpenAPI document lists exactly these (a test holds them together).
    public static let routes: [(method: String, path: String)] = [
        ("GET", "/health"), ("GET", "/metrics"), ("GET", "/api/v1/health"), ("GET", "/api/v1/openapi.json"),
        ("GET", "/api/v1/flows"), ("GET", "/api/v1/flows/{flow_id}"),
        ("POST", "/api/v1/flows/{flow_id}/pause"), ("POST", "/api/v1/flows/{flow_id}/unpause"),
        ("POST", "/api/v1/flows/{flow_id}/runs"), ("POST", "/api/v1/flows/{flow_id}/backfill"),
        ("GET", "/api/v1/runs"), ("GET", "/api/v1/runs/{run_id}"),
        ("POST", "/api/v1/runs/{run_id}/cancel"), ("POST", "/api/v1/runs/{run_id}/clear"),
        ("GET", "/api/v1/runs/{run_id}/tasks"), ("GET", "/api/v1/runs/{run_id}/tasks/{task_id}/logs"),
        ("POST", "/api/v1/runs/{run_id}/tasks/{task_id}/mark"),
        ("GET", "/api/v1/workers"),
        ("GET", "/api/v1/pools"), ("PUT", "/api/v1/pools/{pool}"), ("DELETE", "/api/v1/pools/{pool}"),
        ("GET", "/api/v1/notifications"),
        ("GET", "/api/v1/assets"), ("GET", "/api/v1/assets/events"), ("POST", "/api/v1/assets/events"),
        ("POST", "/api/v1/assets/events/s3"), ("POST", "/api/v1/hooks/{flow_id}"),
        ("GET", "/api/v1/flows/{flow_id}/grid"), ("GET", "/api/v1/events/stream"), ("GET", "/api/v1/schedulers"),
        ("GET", "/api/v1/audit"), ("GET", "/api/v1/dead-letters"),
        ("GET", "/api/v1/connections"), ("GET", "/api/v1/connections/{name}"), ("PUT", "/api/v1/connections/{name}"),
        ("DELETE", "/api/v1/connections/{name}"),
        ("GET", "/api/v1/variables"), ("GET", "/api/v1/variables/{key}"), ("PUT", "/api/v1/variables/{key}"),
        ("DELETE", "/api/v1/variables/{key}"),
    ]

    /// The dashboard's pages and assets (not part of the JSON API, so not in its OpenAPI document).
    public static let uiRoutes: [(method: String, path: String)] = [("GET", "/"), ("GET", "/ui/{file}")]

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
        // HEAD of every GET route answers as the GET, without its body (curl -I, probes).
        let router = Router(options: .autoGenerateHeadEndpoints)
        if !config.corsOrigins.isEmpty {
            let origin: CORSMiddleware<BasicRequestContext>.AllowOriginExtended =
                config.corsOrigins == ["*"] ? .all : .custom(config.corsOrigins[0])
            router.add(middleware: CORSMiddleware(allowOrigin: origin, allowHeaders: [.accept, .authorization, .contentType, .origin],
                                                  allowMethods: [.get, .post, .options]))
        }
        router.add(middleware: RouteFallbackMiddleware(routes: Self.routes + Self.uiRoutes))
        register(router)
        let limits = config.connectionLimits
        let clients = ClientConnections(limit: limits.perClient)
        return Application(router: router,
                           server: .http1(configuration: .init(additionalChannelHandlers: [ConnectionGuard(limits: limits, clients: clients)])),
                           configuration: .init(address: .hostname(host, port: port), serverName: "FlowKit"),
                           logger: logger)
    }

    func register(_ router: Router<BasicRequestContext>) {
        open(router, .get, "/health", why: "a probe for load balancers and orchestrators") { _, _ in await self.health() }
        open(router, .get, "/api/v1/health", why: "a probe for load balancers and orchestrators") { _, _ in await self.health() }
        open(router, .get, "/metrics", why: "Prometheus scrapes it (bind the API to a private address)") { _, _ in await self.metrics() }
        open(router, .get, "/api/v1/openapi.json", why: "the API's own description") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: OpenAPIDocument.text)))
        }
        handle(router, .get, "/api/v1/flows", role: .read) { _, _ in
            async let flows = self.store.flows()
            async let errors = self.store.importErrors()
            return try json(FlowList(flows: try await flows, importErrors: try await errors))
        }
        handle(router, .get, "/api/v1/flows/{flow_id}", role: .read) { _, c in
            try json(try await self.store.flow(try self.param(c, "flow_id")))
        }
        for (path, paused) in [("/api/v1/flows/{flow_id}/pause", true), ("/api/v1/flows/{flow_id}/unpause", false)] {
            handle(router, .post, path, role: .admin) { _, c in
                let flow = try self.param(c, "flow_id")
                let r = try await self.store.setPaused(flowId: flow, paused: paused)
                return try json(r)
            }
        }
        handle(router, .post, "/api/v1/flows/{flow_id}/runs", role: .admin) { req, c in
            let body = try await self.jsonBody(req, c)
            var conf: [String: JSONValue] = [:]
            if let cv = body["conf"], cv != .null {
                guard let o = cv.objectValue else { throw APIError.badRequest("`conf` must be a JSON object") }
                conf = o
            }
            var logical: Date?
            if let l = body["logicalDate"] ?? body["logical_date"], l != .null {
                guard let s = l.stringValue else { throw APIError.badRequest("`logicalDate` must be an ISO-8601 instant") }
                logical = try apiInstant(s, "logicalDate")
            }
            // A client that lost the answer (a timeout, a reset, a 503) sends the same key again and
            // gets the run its first call made (200), never a second run.
            let key = try Self.idempotencyKey(req)
            let made = try await self.store.createRun(flowId: try self.param(c, "flow_id"), kind: "manual", conf: conf,
                                                      logicalDate: logical, idempotencyKey: key, now: Date())
            return try json(made.run, status: made.created ? .created : .ok)
        }
        handle(router, .post, "/api/v1/flows/{flow_id}/backfill", role: .admin) { req, c in
            let body = try await self.jsonBody(req, c, allowEmpty: false)
            func date(_ key: String) throws -> Date {
                guard let s = body[key]?.stringValue else { throw APIError.badRequest("`\(key)` must be an ISO-8601 instant") }
                return try apiInstant(s, key)
            }
            var conf: [String: JSONValue] = [:]
            if let cv = body["conf"], cv != .null {
                guard let o = cv.objectValue else { throw APIError.badRequest("`conf` must be a JSON object") }
                conf = o
            }
            let runs = try await self.store.createBackfillRuns(flowId: try self.param(c, "flow_id"), from: try date("from"),
                                                               to: try date("to"), conf: conf)
            return try json(["runs": runs], status: .created)
        }
        handle(router, .get, "/api/v1/runs", role: .read) { req, _ in
            let q = req.uri.queryParameters
            var f = RunFilter()
            f.flowId = q.get("flow_id")
            if let st = q.get("state") {
                guard RunState(rawValue: st) != nil else {
                    throw APIError.badRequest("`state` must be one of \(RunState.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                f.state = st
            }
            for (key, keyPath) in [("since", \RunFilter.since), ("until", \RunFilter.until)] {
                if let v = q.get(key) {
                    f[keyPath: keyPath] = try apiInstant(String(v), key)
                }
            }
            if let l = q.get("limit") {
                guard let n = Int(l), (1...500).contains(n) else { throw APIError.badRequest("`limit` must be a whole number from 1 to 500") }
                f.limit = n
            }
            if let tc = q.get("taskCounts") ?? q.get("task_counts") {
                guard let b = ["true": true, "false": false][String(tc)] else { throw APIError.badRequest("`taskCounts` must be true or false") }
                f.withTaskCounts = b
            }
            if let cur = q.get("cursor") {
                guard let n = Int(cur), n > 0 else { throw APIError.badRequest("`cursor` is not a cursor this API returned") }
                f.before = n
            }
            let runs = try await self.store.runs(f)
            let next: JSONValue = runs.count == f.limit ? .string(String(runs.last!.id)) : .null
            return try json(RunPage(runs: runs, nextCursor: next.stringValue))
        }
        handle(router, .get, "/api/v1/runs/{run_id}", role: .read) { _, c in
            try json(try await self.store.run(try await self.runParam(c)))
        }
        handle(router, .post, "/api/v1/runs/{run_id}/cancel", role: .admin) { _, c in
            let id = try await self.runParam(c)
            let work = try await self.store.cancelRun(runId: id, now: Date())
            return try await self.answer(afterWrite: work, run: id, sent: "stopRequested")
        }
        handle(router, .post, "/api/v1/runs/{run_id}/clear", role: .admin) { req, c in
            let id = try await self.runParam(c)
            let body = try await self.jsonBody(req, c, allowEmpty: true)
            var tasks: [String]?
            if let t = body["taskIds"] ?? body["task_ids"], t != .null {
                guard let a = t.arrayValue, a.allSatisfy({ $0.stringValue != nil }) else {
                    throw APIError.badRequest("`taskIds` must be an array of task ids")
                }
                tasks = a.compactMap(\.stringValue)
            }
            var onlyFailed = false
            if let o = body["onlyFailed"] ?? body["only_failed"], o != .null {
                guard case .bool(let b) = o else { throw APIError.badRequest("`onlyFailed` must be true or false") }
                onlyFailed = b
            }
            let work = try await self.store.clearTasks(runId: id, taskIds: tasks, onlyFailed: onlyFailed, now: Date())
            return try await self.answer(afterWrite: work, run: id, sent: "messagesSent")
        }
        handle(router, .post, "/api/v1/runs/{run_id}/tasks/{task_id}/mark", role: .admin) { req, c in
            let id = try await self.runParam(c)
            let body = try await self.jsonBody(req, c, allowEmpty: false)
            guard let st = body["state"]?.stringValue, let state = TaskState(rawValue: st), state == .success || state == .failed else {
                throw APIError.badRequest("`state` must be \"success\" or \"failed\"")
            }
            let work = try await self.store.markTask(runId: id, taskId: try self.param(c, "task_id"), as: state, now: Date())
            return try await self.answer(afterWrite: work, run: id, sent: "messagesSent")
        }
        handle(router, .get, "/api/v1/runs/{run_id}/tasks", role: .read) { _, c in
            try json(["tasks": try await self.store.taskInstances(runId: try await self.runParam(c))])
        }
        handle(router, .get, "/api/v1/runs/{run_id}/tasks/{task_id}/logs", role: .read) { req, c in
            let q = req.uri.queryParameters
            var tryNumber: Int?
            if let t = q.get("try") {
                guard let n = Int32(t), n >= 1 else { throw APIError.badRequest("`try` must be a try number from 1 to \(Int32.max)") }
                tryNumber = Int(n)
            }
            var offset = 0
            if let o = q.get("offset") {
                guard let n = Int(o), n >= 0 else { throw APIError.badRequest("`offset` must be a whole number from 0 to \(Int.max)") }
                offset = n
            }
            let r = try await self.store.logs(runId: try await self.runParam(c), taskId: try self.param(c, "task_id"),
                                              tryNumber: tryNumber, after: offset)
            return try json(LogPage(tryNumber: r.tryNumber, lines: r.lines, nextOffset: r.lines.last?.offset ?? offset))
        }
        open(router, .get, "/", why: "the dashboard's page; its API calls carry the token") { _, _ in Self.uiFile("index.html") }
        open(router, .get, "/ui/{file}", why: "the dashboard's static files") { _, c in Self.uiFile(c.parameters.get("file") ?? "") }
        handle(router, .get, "/api/v1/flows/{flow_id}/grid", role: .read) { req, c in
            let q = req.uri.queryParameters
            let limit = try Self.count(q.get("runs"), "runs", default: 25, max: 200)
            var state: String?
            if let st = q.get("state") {
                guard RunState(rawValue: String(st)) != nil else {
                    throw APIError.badRequest("`state` must be one of \(RunState.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                state = String(st)
            }
            return try json(try await self.store.grid(flowId: try self.param(c, "flow_id"), limit: limit, state: state))
        }
        handle(router, .get, "/api/v1/events/stream", role: .read) { req, _ in
            var seconds = 300.0
            if let v = req.uri.queryParameters.get("maxSeconds") {
                guard let n = Double(v), n >= 1, n <= 3600 else { throw APIError.badRequest("`maxSeconds` must be a number from 1 to 3600") }
                seconds = n
            }
            return self.eventStream(maxSeconds: seconds)
        }
        handle(router, .get, "/api/v1/schedulers", role: .read) { _, _ in
            let r = try await self.store.schedulers(now: Date())
            return try json(SchedulerList(schedulers: r.schedulers, leaderHeld: r.leaderHeld))
        }
        handle(router, .get, "/api/v1/workers", role: .read) { _, _ in
            try json(["workers": try await self.store.workers(now: Date())])
        }
        open(router, .post, "/api/v1/hooks/{flow_id}", why: "a flow's webhook: checked against the flow's own secret, not an API token") { req, ctx in
            try await self.hook(req, ctx)
        }
        handle(router, .get, "/api/v1/assets", role: .read) { _, _ in
            try json(["assets": try await self.store.assets()])
        }
        handle(router, .get, "/api/v1/assets/events", role: .read) { req, _ in
            let q = req.uri.queryParameters
            guard let uri = q.get("uri").map({ String($0) }), !uri.isEmpty else { throw APIError.badRequest("`uri` names the asset: ?uri=scheme://name") }
            let limit = try Self.count(q.get("limit"), "limit", default: 100, max: 1000)
            return try json(["events": try await self.store.assetEvents(uri: uri, limit: limit)])
        }
        handle(router, .post, "/api/v1/assets/events", role: .events) { req, c in
            let body = try await self.jsonBody(req, c, allowEmpty: false)
            guard let uri = body["uri"]?.stringValue else { throw APIError.badRequest("`uri` (a string, scheme://name) is required") }
            let extra = body["extra"] ?? [:]
            guard extra == .null || extra.objectValue != nil else { throw APIError.badRequest("`extra` must be a JSON object") }
            let (id, runs) = try await self.store.postAssetEvent(uri: uri, extra: extra == .null ? [:] : extra, now: Date())
            return try json(["eventId": .int(id), "runs": .array(runs.map { JSONValue.string($0.runId) })] as [String: JSONValue], status: .created)
        }
        open(router, .post, "/api/v1/assets/events/s3",
             why: "bucket notifications: checked against the notification secret, or an events token") { req, ctx in
            try await self.s3Events(req, ctx)
        }
        handle(router, .get, "/api/v1/notifications", role: .read) { req, _ in
            let q = req.uri.queryParameters
            var status: String?
            if let st = q.get("status") {
                guard ["pending", "delivered", "failed"].contains(st) else { throw APIError.badRequest("`status` must be pending, delivered or failed") }
                status = st
            }
            let limit = try Self.count(q.get("limit"), "limit", default: 100, max: 1000)
            let run = q.get("run_id").map { String($0) }
            return try json(["notifications": try await self.store.notifications(runId: run, status: status, limit: limit)])
        }
        handle(router, .get, "/api/v1/pools", role: .read) { _, _ in
            try json(["pools": try await self.store.pools()])
        }
        handle(router, .put, "/api/v1/pools/{pool}", role: .admin) { req, c in
            let body = try await self.jsonBody(req, c, allowEmpty: false)
            guard case .int(let slots)? = body["slots"] else { throw APIError.badRequest("`slots` must be a whole number of slots, 0 or more") }
            var description: String?
            if let d = body["description"], d != .null {
                guard let text = d.stringValue, text.utf8.count <= 1000, !text.utf8.contains(0) else {
                    throw APIError.badRequest("`description` must be a string of at most 1,000 bytes, without NUL characters")
                }
                description = text
            }
            let pool = try await self.store.setPool(name: try self.param(c, "pool"), slots: slots, description: description)
            return try json(pool)
        }
        handle(router, .delete, "/api/v1/pools/{pool}", role: .admin) { _, c in
            let name = try self.param(c, "pool")
            try await self.store.deletePool(name: name)
            return try json(["deleted": JSONValue.string(name)])
        }
        registerStoreRoutes(router)
        handle(router, .get, "/api/v1/audit", role: .admin) { req, _ in
            let q = req.uri.queryParameters
            let limit = try Self.count(q.get("limit"), "limit", default: 100, max: 1000)
            var before: Int?
            if let b = q.get("before") {
                guard let n = Int(b), n > 0 else { throw APIError.badRequest("`before` must be an entry id") }
                before = n
            }
            let actor = q.get("actor").map { String($0) }, action = q.get("action").map { String($0) }
            return try json(["entries": try await self.store.auditLog(actor: actor, action: action, before: before, limit: limit)])
        }
        // What workers and schedulers could not use, before the capped list drops it. Admin only:
        // a dead message carries its run's params.
        handle(router, .get, "/api/v1/dead-letters", role: .admin) { req, _ in
            let q = req.uri.queryParameters
            let limit = try Self.count(q.get("limit"), "limit", default: 50, max: 1000)
            let offset = try Self.count(q.get("offset"), "offset", default: 0, max: DeadLetter.maxEntries, min: 0)
            let page = try await self.broker.deadLetters(offset: offset, limit: limit)
            return try json(["total": .int(page.total), "capacity": .int(DeadLetter.maxEntries), "entries": .array(page.entries)] as JSONValue)
        }
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
    func hook(_ req: Request, _ c: BasicRequestContext) async throws -> Response {
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
            try await store.createHookRun(flowId: flow, conf: conf, idempotencyKey: key, now: Date())
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
    func s3Events(_ req: Request, _ c: BasicRequestContext) async throws -> Response {
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
            try await store.recordS3Events(parsed.records, now: Date())
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
            let end = Date().addingTimeInterval(maxSeconds)
            // A ticker joins the changes, so that the loop wakes for keep-alives and the end.
            let ticker = Task {
                while !Task.isCancelled && Date() < end {
                    try? await Task.sleep(for: .seconds(min(15, max(0.05, end.timeIntervalSinceNow))))
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
                if Date() >= end { break }
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache",
                                               HTTPField.Name("X-Accel-Buffering")!: "no"], body: body)
    }

    /// Registers a handler that needs no API token, saying why (a probe, the dashboard's files, a
    /// delivery checked against a secret of its own), with the same JSON errors.
    func open(_ router: Router<BasicRequestContext>, _ method: HTTPRequest.Method, _ path: String, why: String,
              _ body: @escaping @Sendable (Request, BasicRequestContext) async throws -> Response) {
        access.record(method, path, .open(why))
        router.on(RouterPath(path), method: method) { req, ctx -> Response in
            do { return try await body(req, ctx) } catch { return self.errorResponse(error, request: req) }
        }
    }

    /// Registers a handler with authentication and JSON errors: bad input never becomes a 500.
    func handle(_ router: Router<BasicRequestContext>, _ method: HTTPRequest.Method, _ path: String, role: APIConfig.Role,
                _ body: @escaping @Sendable (Request, BasicRequestContext) async throws -> Response) {
        access.record(method, path, .role(role))
        router.on(RouterPath(path), method: method) { req, ctx -> Response in
            do {
                let actor = try await self.auth.authorize(req, needs: role)
                // The store records each write's audit entry, with this actor, in the write's own transaction.
                return try await WriteActor.$current.withValue(actor) { try await body(req, ctx) }
            } catch {
                return self.errorResponse(error, request: req)
            }
        }
    }

    func errorResponse(_ error: any Error, request: Request) -> Response {
        let e: APIError
        if let u = ServiceUnavailable(error) { return errorJSON(APIError(.serviceUnavailable, u.reason.rawValue, u.message)) }
        switch error {
        case let a as APIError: e = a
        case let n as NotFound: e = APIError(.notFound, "not_found", n.message)
        case let c as StateConflict: e = APIError(.conflict, "conflict", c.message)
        case let c as ConfError: e = APIError(.badRequest, "invalid_conf", c.message)
        case let b as BadRequest: e = APIError(.badRequest, "bad_request", b.message)
        case let h as any HTTPResponseError where h.status == .contentTooLarge:
            e = APIError(.contentTooLarge, "payload_too_large", "the request body is larger than \(config.maxBodyBytes) bytes")
        case let h as any HTTPResponseError:
            e = APIError(h.status, "http_\(h.status.code)", h.status.reasonPhrase)
        default:
            logger.error("unexpected error on \(request.method) \(request.uri.path): \(error)")
            e = APIError(.internalServerError, "internal", "internal error; the server log has the details")
        }
        return errorJSON(e)
    }

    /// The request body as a JSON object; `allowEmpty` reads an empty body as `{}`.
    func jsonBody(_ req: Request, _ ctx: BasicRequestContext, allowEmpty: Bool = true) async throws -> JSONValue {
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
    func runParam(_ c: BasicRequestContext) async throws -> String {
        try await store.resolveRunId(try param(c, "run_id"))
    }

    /// A path parameter, percent-decoded (`example%5Fsleep` is `example_sleep`).
    func param(_ c: BasicRequestContext, _ name: String) throws -> String {
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
        if let age = try? await store.schedulerHeartbeatAge(now: Date()) {
            let fresh = age < 30
            if !fresh { ok = false }
            checks["scheduler"] = fresh ? "ok" : .string("stale: last heartbeat \(Int(age))s ago")
        } else {
            ok = false
            checks["scheduler"] = checks["postgres"] == "ok" ? "down: no scheduler has ever run" : "unknown"
        }
        var fields: [String: JSONValue] = ["status": .string(ok ? "ok" : "unavailable"), "checks": .object(checks)]
        // Queue depths for the dashboard: the queues workers consume, and the default one.
        if checks["redis"] == "ok", checks["postgres"] == "ok", let workers = try? await store.workers(now: Date()) {
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
        if checks["postgres"] == "ok", let problems = try? await store.configurationProblems(now: Date()), !problems.isEmpty {
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
        if let workers = try? await store.workers(now: Date()) {
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

struct RunPage: Encodable, JSONWritable {
    var runs: [RunRecord]
    var nextCursor: String?
    enum CodingKeys: String, CodingKey { case runs, nextCursor }
    /// `nextCursor` is always present: null on the last page.
    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(runs, forKey: .runs)
        try c.encode(nextCursor, forKey: .nextCursor)
    }
    func write(to w: inout JSONWriter) {
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

struct FlowList: Codable { var flows: [FlowRecord]; var importErrors: [ImportErrorRecord] }

struct SchedulerList: Codable { var schedulers: [SchedulerRecord]; var leaderHeld: Bool }

struct LogPage: Codable { var tryNumber: Int; var lines: [LogLine]; var nextOffset: Int }

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

/// Who may call a route: an API role (checked by `FlowAPI.handle`), or no API token, with why.
enum RouteAccess: Sendable, Equatable {
    case role(APIConfig.Role)
    case open(String)
}

/// The access declared for each route as it is registered, by `METHOD /path`.
final class RouteAccessTable: @unchecked Sendable {
    private let lock = NSLock()
    private var entries: [String: RouteAccess] = [:]
    func record(_ method: HTTPRequest.Method, _ path: String, _ access: RouteAccess) {
        lock.withLock { entries["\(method.rawValue) \(path)"] = access }
    }
    var all: [String: RouteAccess] { lock.withLock { entries } }
}
