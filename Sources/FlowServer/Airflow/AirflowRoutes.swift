import FlowKit
import Foundation
import Hummingbird
import HummingbirdCore
import HTTPTypes
import NIOCore
import Scheduler

/// Airflow 3's REST API (`/api/v2`) over FlowKit's store: the subset that CI jobs, monitoring
/// scripts and `apache-airflow-client` use daily — version, health, the token exchange, DAGs,
/// DAG runs, task instances with their tries, logs and `return_value` XCom, pools and assets.
/// A flow is a DAG, a run a DAG run; the answers have Airflow's field names and shapes
/// (`AirflowShapes`) and errors Airflow's `{"detail": …}` (`APIErrorMiddleware`). Writes go
/// through the same store operations, roles and audit log as `/api/v1`'s. docs/airflow-api.md
/// maps each endpoint and field.
struct AirflowRoutes: APIResource {
    let api: FlowAPI

    func register(_ routes: APIRoutes) {
        registerService(routes)
        registerDags(routes)
        registerRuns(routes)
        registerTaskInstances(routes)
        registerPoolsAndAssets(routes)
    }

    // MARK: version, health, token

    func registerService(_ routes: APIRoutes) {
        routes.open(.get, "/api/v2/version", why: "Airflow's version endpoint, open as Airflow serves it") { _, _ in
            airflowJSON(["version": .string(api.config.version), "git_version": nil])
        }
        routes.open(.get, "/api/v2/monitor/health", why: "Airflow's health endpoint, open as Airflow serves it") { _, _ in
            let now = api.config.clock.now()
            let database: String
            do { try await api.store.ping(); database = "healthy" } catch { database = "unhealthy" }
            var scheduler: JSONValue = ["status": "unhealthy", "latest_scheduler_heartbeat": nil]
            if database == "healthy", let age = try? await api.store.schedulerHeartbeatAge(now: now) {
                scheduler = ["status": age < 30 ? "healthy" : "unhealthy", "latest_scheduler_heartbeat": AirflowShapes.time(now.addingTimeInterval(-age))]
            }
            return airflowJSON(["metadatabase": ["status": .string(database)], "scheduler": scheduler,
                                "triggerer": ["status": nil, "latest_triggerer_heartbeat": nil], "dag_processor": nil])
        }
        // Airflow's simple auth manager: a name and password exchanged for the bearer token the
        // client sends then. A user of FLOWKIT_AIRFLOW_USERS gets a token of `flowctl tokens`
        // (stored hashed, valid 24 hours, audited as `token:airflow-NAME-…`); a password that is
        // itself a FlowKit API token is answered with that token.
        routes.open(.post, "/auth/token", why: "exchanges a name and password (or an API token) for a bearer token, as Airflow's simple auth manager") { req, c in
            let body = try await api.jsonBody(req, c, allowEmpty: false)
            guard let name = body["username"]?.stringValue, let password = body["password"]?.stringValue else {
                throw APIError(.unprocessableContent, "bad_request", "the body must be {\"username\": …, \"password\": …}")
            }
            let now = api.config.clock.now()
            if let user = api.config.airflowUsers.first(where: { $0.name == name }),
               APITokens.constantTimeEqual(Array(SHA256.hash(Data(user.password.utf8))), Array(SHA256.hash(Data(password.utf8)))) {
                let t = APITokens.generate()
                _ = try await WriteActor.$current.withValue("airflow-login:\(name)") {
                    try await api.store.createAPIToken(id: t.id, name: "airflow-\(name)-\(t.id)", role: user.role.rawValue, salt: t.salt,
                                                       secretHash: t.secretHash, expiresAt: now.addingTimeInterval(86_400), now: now)
                }
                return airflowJSON(["access_token": .string(t.text)], status: .created)
            }
            if try await api.auth.identify(password, now: now) != nil {
                return airflowJSON(["access_token": .string(password)], status: .created)
            }
            throw APIError(.unauthorized, "unauthorized", "invalid username or password")
        }
    }

    // MARK: DAGs

    func registerDags(_ routes: APIRoutes) {
        routes.on(.get, "/api/v2/dags", role: .read) { req, _ in
            let q = req.uri.queryParameters
            try AirflowQuery.rejectUnsupported(q, supported: ["limit", "offset", "tags", "tags_match_mode", "owners", "dag_id_pattern",
                                                              "exclude_stale", "paused", "has_import_errors", "last_dag_run_state", "order_by"])
            var rows = try await api.store.dagRows()
            if try AirflowQuery.bool(q, "exclude_stale") ?? true { rows = rows.filter(\.flow.isActive) }
            if let paused = try AirflowQuery.bool(q, "paused") { rows = rows.filter { $0.flow.isPaused == paused } }
            if let errors = try AirflowQuery.bool(q, "has_import_errors") { rows = rows.filter { $0.hasImportErrors == errors } }
            let tags = q.getAll("tags").map { String($0) }
            if !tags.isEmpty {
                let all = (q.get("tags_match_mode").map { String($0) } ?? "any") == "all"
                rows = rows.filter { r in all ? tags.allSatisfy(r.flow.tags.contains) : tags.contains(where: r.flow.tags.contains) }
            }
            let owners = q.getAll("owners").map { String($0) }
            if !owners.isEmpty { rows = rows.filter { owners.contains($0.flow.owner) } }
            if let p = q.get("dag_id_pattern") { rows = rows.filter { AirflowQuery.like($0.flow.flowId, String(p)) } }
            if let st = q.get("last_dag_run_state") {
                let wanted = try AirflowShapes.runStates(fromAirflow: String(st))
                rows = rows.filter { $0.lastRunState.map(wanted.contains) ?? false }
            }
            let (key, descending) = try AirflowQuery.singleOrder(q, default: "dag_id", allowed: ["dag_id", "dag_display_name", "next_dagrun", "last_run_state"])
            rows.sort { a, b in
                let less: Bool
                switch key {
                case "next_dagrun": less = (a.flow.nextRunAt ?? .distantFuture, a.flow.flowId) < (b.flow.nextRunAt ?? .distantFuture, b.flow.flowId)
                case "last_run_state": less = (a.lastRunState ?? "", a.flow.flowId) < (b.lastRunState ?? "", b.flow.flowId)
                default: less = a.flow.flowId < b.flow.flowId
                }
                return descending ? !less && a.flow.flowId != b.flow.flowId : less
            }
            let (limit, offset) = try AirflowQuery.page(q)
            return airflowJSON(["dags": .array(rows.dropFirst(offset).prefix(limit).map(AirflowShapes.dag)), "total_entries": .int(rows.count)])
        }
        routes.on(.get, "/api/v2/dags/{dag_id}", role: .read) { _, c in
            airflowJSON(AirflowShapes.dag(try await dagRow(try api.param(c, "dag_id"))))
        }
        routes.on(.get, "/api/v2/dags/{dag_id}/details", role: .read) { _, c in
            let row = try await dagRow(try api.param(c, "dag_id"))
            var active = RunQuery()
            active.flowIds = [row.flow.flowId]; active.states = ["queued", "running"]; active.limit = 1
            let versions = try await api.store.flowVersions([row.flow.flowId])
            return airflowJSON(AirflowShapes.dagDetails(row, activeRuns: try await api.store.runPage(active).total,
                                                        latest: versions[row.flow.flowId]?[row.flow.version]))
        }
        routes.on(.patch, "/api/v2/dags/{dag_id}", role: .admin) { req, c in
            let id = try api.param(c, "dag_id")
            if let mask = req.uri.queryParameters.get("update_mask"), mask != "is_paused" {
                throw APIError.badRequest("only `is_paused` can be updated, not `\(mask)`")
            }
            let body = try await api.jsonBody(req, c, allowEmpty: false)
            guard let paused = body["is_paused"]?.boolValue else { throw APIError(.unprocessableContent, "bad_request", "`is_paused` (true or false) is required") }
            _ = try await api.store.setPaused(flowId: try await knownFlow(id), paused: paused)
            return airflowJSON(AirflowShapes.dag(try await dagRow(id)))
        }
    }

    // MARK: DAG runs

    func registerRuns(_ routes: APIRoutes) {
        routes.on(.get, "/api/v2/dags/{dag_id}/dagRuns", role: .read) { req, c in
            let q = req.uri.queryParameters
            try AirflowQuery.rejectUnsupported(q, supported: ["limit", "offset", "order_by", "state", "run_type"] + AirflowQuery.runRangeKeys)
            var query = RunQuery()
            let dag = try api.param(c, "dag_id")
            if dag != "~" { query.flowIds = [try await knownFlow(dag)] }
            let states = try q.getAll("state").flatMap { try AirflowShapes.runStates(fromAirflow: String($0)) }
            if !states.isEmpty { query.states = states }
            let kinds = try q.getAll("run_type").flatMap { try AirflowShapes.kinds(fromAirflow: String($0)) }
            if !q.getAll("run_type").isEmpty { query.kinds = kinds }
            query.ranges = try AirflowQuery.runRanges { key in q.get(key).map { String($0) } }
            query.orderBy = try AirflowQuery.runOrder(q.getAll("order_by").map { String($0) })
            (query.limit, query.offset) = try AirflowQuery.page(q)
            return try await runList(query)
        }
        routes.on(.post, "/api/v2/dags/{dag_id}/dagRuns/list", role: .read) { req, c in
            guard try api.param(c, "dag_id") == "~" else { throw APIError.badRequest("the batch list is `POST /api/v2/dags/~/dagRuns/list`; name DAGs in `dag_ids`") }
            let body = try await api.jsonBody(req, c, allowEmpty: true)
            var query = RunQuery()
            let known = Set(["dag_ids", "states", "page_offset", "page_limit", "order_by"] + AirflowQuery.runRangeKeys)
            for key in (body.objectValue ?? [:]).keys.sorted() where !known.contains(key) && body[key] != .null {
                throw APIError.badRequest("`\(key)` is not a filter FlowKit's Airflow API serves; it serves \(known.sorted().joined(separator: ", "))")
            }
            if let ids = body["dag_ids"], ids != .null {
                guard let list = ids.arrayValue?.compactMap(\.stringValue) else { throw APIError.badRequest("`dag_ids` must be a list of DAG ids") }
                query.flowIds = list
            }
            if let st = body["states"], st != .null {
                guard let list = st.arrayValue else { throw APIError.badRequest("`states` must be a list of states") }
                query.states = try list.flatMap { v -> [String] in
                    guard let s = v.stringValue else { return ["pending-none"] }  // Airflow's null state: no run has it
                    return try AirflowShapes.runStates(fromAirflow: s)
                }
            }
            query.ranges = try AirflowQuery.runRanges { key in body[key]?.stringValue }
            query.orderBy = try AirflowQuery.runOrder(body["order_by"]?.stringValue.map { [$0] } ?? [])
            query.limit = try AirflowQuery.count(body["page_limit"]?.intValue, "page_limit", default: 100)
            query.offset = body["page_offset"]?.intValue ?? 0
            guard query.offset >= 0 else { throw APIError.badRequest("`page_offset` must be 0 or more") }
            return try await runList(query)
        }
        routes.on(.get, "/api/v2/dags/{dag_id}/dagRuns/{dag_run_id}", role: .read) { _, c in
            let run = try await run(c)
            return airflowJSON(AirflowShapes.dagRun(run, version: try await version(of: run)))
        }
        routes.on(.post, "/api/v2/dags/{dag_id}/dagRuns", role: .admin) { req, c in
            let dag = try api.param(c, "dag_id")
            let body = try await api.jsonBody(req, c, allowEmpty: true)
            for key in ["data_interval_start", "data_interval_end", "run_after", "partition_key"] where (body[key] ?? .null) != .null {
                throw APIError.badRequest("`\(key)` cannot be set on FlowKit: a manual run's data interval and run_after are its logical date")
            }
            if (body["note"] ?? .null) != .null { throw APIError.badRequest("FlowKit keeps no notes on runs: `note` cannot be set") }
            var conf: [String: JSONValue] = [:]
            if let c = body["conf"], c != .null {
                guard let o = c.objectValue else { throw APIError.badRequest("`conf` must be a JSON object") }
                conf = o
            }
            var logical: Date?
            if let l = body["logical_date"], l != .null {
                guard let s = l.stringValue else { throw APIError.badRequest("`logical_date` must be an ISO-8601 instant") }
                logical = try AirflowQuery.instant(s, "logical_date")
            }
            var runId: String?
            if let r = body["dag_run_id"], r != .null {
                guard let s = r.stringValue else { throw APIError.badRequest("`dag_run_id` must be a string") }
                runId = s
            }
            let made = try await api.store.createRun(flowId: try await knownFlow(dag), kind: "manual", conf: conf, logicalDate: logical,
                                                      idempotencyKey: try FlowAPI.idempotencyKey(req), runId: runId, now: api.config.clock.now())
            return airflowJSON(AirflowShapes.dagRun(made.run, version: try await version(of: made.run)))
        }
        routes.on(.patch, "/api/v2/dags/{dag_id}/dagRuns/{dag_run_id}", role: .admin) { req, c in
            var run = try await run(c)
            let body = try await api.jsonBody(req, c, allowEmpty: false)
            if let note = body["note"], note != .null { throw APIError.badRequest("FlowKit keeps no notes on runs: `note` cannot be set") }
            guard let state = body["state"]?.stringValue else { throw APIError(.unprocessableContent, "bad_request", "`state` (success or failed) is required") }
            let now = api.config.clock.now()
            switch state {
            case "failed":
                // A run marked failed stops: FlowKit cancels it (shown `failed` here).
                if !(RunState(rawValue: run.state)?.isTerminal ?? true) {
                    await send(try await api.store.cancelRun(runId: run.runId, now: now), what: "stop requests for run \(run.runId)")
                }
            case "success":
                // Every unfinished task marked success, as Airflow's "mark success" does. A
                // queued run has no task instances yet: there is nothing to mark.
                let tasks = try await api.store.taskInstances(runId: run.runId)
                if tasks.isEmpty && run.state == "queued" {
                    throw StateConflict("run `\(run.runId)` has not started: its tasks do not exist yet; mark it once it runs, or mark it failed")
                }
                for t in tasks where t.mapParent == nil && !(TaskState(rawValue: t.state)?.isTerminal ?? true) || t.state == "failed" || t.state == "upstream_failed" {
                    await send(try await api.store.markTask(runId: run.runId, taskId: t.taskId, as: .success, now: now), what: "marks for run \(run.runId)")
                }
            default:
                throw APIError.badRequest("`state` must be success or failed; to run tasks again, clear them")
            }
            run = try await api.store.run(run.runId)
            return airflowJSON(AirflowShapes.dagRun(run, version: try await version(of: run)))
        }
        routes.on(.post, "/api/v2/dags/{dag_id}/dagRuns/{dag_run_id}/clear", role: .admin) { req, c in
            let run = try await run(c)
            let body = try await api.jsonBody(req, c, allowEmpty: true)
            let onlyFailed = body["only_failed"]?.boolValue ?? false
            // Airflow's default is a dry run: what would be cleared, nothing changed.
            if body["dry_run"]?.boolValue ?? true {
                let tasks = try await api.store.taskInstances(runId: run.runId).filter { t in
                    t.mapParent == nil && (onlyFailed ? ["failed", "upstream_failed"].contains(t.state) : true)
                }
                let v = try await version(of: run)
                let definition = try await definition(of: run)
                return airflowJSON(["task_instances": .array(tasks.map { t in
                    AirflowShapes.taskInstance(t, run: run, task: definition?.tasks.first { $0.id == t.taskId }, version: v, awaitingInput: false)
                }), "total_entries": .int(tasks.count)])
            }
            await send(try await api.store.clearTasks(runId: run.runId, taskIds: nil, onlyFailed: onlyFailed, now: api.config.clock.now()),
                       what: "messages for run \(run.runId)")
            let after = try await api.store.run(run.runId)
            return airflowJSON(AirflowShapes.dagRun(after, version: try await version(of: after)))
        }
    }

    // MARK: task instances, tries, logs, XCom

    func registerTaskInstances(_ routes: APIRoutes) {
        routes.on(.get, "/api/v2/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances", role: .read) { req, c in
            let q = req.uri.queryParameters
            try AirflowQuery.rejectUnsupported(q, supported: ["limit", "offset", "state", "task_id", "order_by"])
            let dag = try api.param(c, "dag_id"), runRef = try api.param(c, "dag_run_id")
            var runs: [RunRecord]
            if runRef != "~" {
                runs = [try await run(c)]
            } else {
                // Every run of the DAG (or of every DAG), newest first: the task instances of
                // the newest 100 runs (a wildcard over a long history would read all of it).
                var query = RunQuery()
                if dag != "~" { query.flowIds = [try await knownFlow(dag)] }
                query.orderBy = [(.id, true)]; query.limit = 100
                runs = try await api.store.runPage(query).runs
            }
            let states = try q.getAll("state").flatMap { try AirflowShapes.taskStates(fromAirflow: String($0)) }
            let taskFilter = q.get("task_id").map { String($0) }
            var items: [(TaskInstanceRecord, RunRecord)] = []
            for r in runs {
                for t in try await api.store.taskInstances(runId: r.runId) where !isMappedParent(t) {
                    if !states.isEmpty && !states.contains(t.state) { continue }
                    if let taskFilter, AirflowShapes.baseTaskId(t) != taskFilter { continue }
                    items.append((t, r))
                }
            }
            let (key, descending) = try AirflowQuery.singleOrder(q, default: "map_index",
                                                                 allowed: ["map_index", "task_id", "start_date", "end_date", "state", "try_number", "priority_weight"])
            if key != "map_index" || descending {
                items = items.enumerated().sorted { a, b in
                    let (x, y) = (a.element.0, b.element.0)
                    let order: Bool?
                    switch key {
                    case "task_id": order = x.taskId == y.taskId ? nil : x.taskId < y.taskId
                    case "start_date": order = x.startedAt == y.startedAt ? nil : (x.startedAt ?? .distantFuture) < (y.startedAt ?? .distantFuture)
                    case "end_date": order = x.endedAt == y.endedAt ? nil : (x.endedAt ?? .distantFuture) < (y.endedAt ?? .distantFuture)
                    case "state": order = x.state == y.state ? nil : x.state < y.state
                    case "try_number": order = x.tryNumber == y.tryNumber ? nil : x.tryNumber < y.tryNumber
                    case "priority_weight": order = x.priority == y.priority ? nil : x.priority < y.priority
                    default: order = (x.mapIndex ?? -1) == (y.mapIndex ?? -1) ? nil : (x.mapIndex ?? -1) < (y.mapIndex ?? -1)
                    }
                    guard let order else { return a.offset < b.offset }
                    return descending ? !order : order
                }.map(\.element)
            }
            let (limit, offset) = try AirflowQuery.page(q)
            var versions: [String: [Int: FlowVersionInfo]] = [:]
            if !runs.isEmpty { versions = try await api.store.flowVersions(Array(Set(runs.map(\.flowId)))) }
            var definitions: [String: FlowDefinition] = [:]
            for r in Set(runs.map { "\($0.flowId)\u{0}\($0.flowVersion)" }).compactMap({ k in runs.first { "\($0.flowId)\u{0}\($0.flowVersion)" == k } }) {
                definitions["\(r.flowId)\u{0}\(r.flowVersion)"] = try await definition(of: r)
            }
            let waiting = Set(try await api.store.approvals(waitingOnly: true, runId: runRef == "~" ? nil : runs.first?.runId).map { "\($0.runId)\u{0}\($0.taskId)" })
            let page = items.dropFirst(offset).prefix(limit).map { t, r in
                AirflowShapes.taskInstance(t, run: r, task: definitions["\(r.flowId)\u{0}\(r.flowVersion)"]?.tasks.first { $0.id == AirflowShapes.baseTaskId(t) },
                                           version: versions[r.flowId]?[r.flowVersion], awaitingInput: waiting.contains("\(r.runId)\u{0}\(t.taskId)"))
            }
            return airflowJSON(["task_instances": .array(page), "total_entries": .int(items.count)])
        }
        routes.on(.get, "/api/v2/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}", role: .read) { _, c in
            let (run, t) = try await taskInstance(c)
            let waiting = try await api.store.approvals(waitingOnly: true, runId: run.runId).contains { $0.taskId == t.taskId }
            return airflowJSON(AirflowShapes.taskInstance(t, run: run, task: try await definition(of: run)?.tasks.first { $0.id == t.taskId },
                                                          version: try await version(of: run), awaitingInput: waiting))
        }
        routes.on(.get, "/api/v2/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}/tries", role: .read) { _, c in
            let (run, t) = try await taskInstance(c)
            let task = try await definition(of: run)?.tasks.first { $0.id == t.taskId }
            let v = try await version(of: run)
            return airflowJSON(["task_instances": .array(t.tries.map { AirflowShapes.taskTry($0, of: t, run: run, task: task, version: v) }),
                                "total_entries": .int(t.tries.count)])
        }
        routes.on(.get, "/api/v2/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}/logs/{try_number}", role: .read) { req, c in
            let (run, t) = try await taskInstance(c)
            guard let tryNumber = Int(try api.param(c, "try_number")), tryNumber >= 1 else {
                throw APIError.badRequest("`try_number` must be a try number from 1")
            }
            let q = req.uri.queryParameters
            var offset = 0
            if let token = q.get("token") {
                guard let n = Int(token), n >= 0 else { throw APIError.badRequest("`token` is not a continuation token this API returned") }
                offset = n
            }
            // A page of lines, or with `full_content` (and for text) the whole try's log.
            let full = try AirflowQuery.bool(q, "full_content") ?? false
            let text = req.headers[.accept]?.contains("text/plain") == true
            var lines: [LogLine] = []
            while true {
                let page = try await api.store.logs(runId: run.runId, taskId: t.taskId, tryNumber: tryNumber, after: offset, limit: 5000)
                lines += page.lines
                offset = page.lines.last?.offset ?? offset
                if page.lines.count < 5000 || !(full || text) || lines.count >= 200_000 { break }
            }
            if text {
                let body = lines.map { "[\(Instant.format($0.at, fractionDigits: 3))] \($0.line)" }.joined(separator: "\n") + (lines.isEmpty ? "" : "\n")
                return Response(status: .ok, headers: [.contentType: "text/plain; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: body)))
            }
            return airflowJSON(["content": .array(lines.map { ["timestamp": AirflowShapes.time($0.at), "event": .string($0.line)] }),
                                "continuation_token": .string(String(offset))])
        }
        routes.on(.get, "/api/v2/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}/xcomEntries", role: .read) { req, c in
            let (run, t) = try await taskInstance(c)
            let key: String? = req.uri.queryParameters.get("xcom_key").map { String($0) }
            let entries: [JSONValue] = (t.result != nil && (key == nil || key == "return_value")) ? [xcomEntry(run, t, value: nil)] : []
            return airflowJSON(["xcom_entries": .array(entries), "total_entries": .int(entries.count)])
        }
        routes.on(.get, "/api/v2/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}/xcomEntries/{xcom_key}", role: .read) { req, c in
            let (run, t) = try await taskInstance(c)
            let key = try api.param(c, "xcom_key")
            guard key == "return_value" else {
                throw APIError(.notFound, "not_found", "XCom entry with key: `\(key)` not found: FlowKit keeps a task's result as `return_value` only")
            }
            guard let value = t.result else {
                throw APIError(.notFound, "not_found", "XCom entry with key: `return_value` not found: task `\(t.taskId)` of run `\(run.runId)` has no result")
            }
            // `stringify` (Airflow's default off) gives the value as text, as Airflow's XComResponseString.
            let stringify = try AirflowQuery.bool(req.uri.queryParameters, "stringify") ?? false
            return airflowJSON(xcomEntry(run, t, value: stringify ? .string(value.compactJSON) : value))
        }
    }

    // MARK: pools, assets

    func registerPoolsAndAssets(_ routes: APIRoutes) {
        routes.on(.get, "/api/v2/pools", role: .read) { req, _ in
            let q = req.uri.queryParameters
            try AirflowQuery.rejectUnsupported(q, supported: ["limit", "offset", "order_by", "pool_name_pattern"])
            var pools = try await api.store.pools()
            if let p = q.get("pool_name_pattern") { pools = pools.filter { AirflowQuery.like($0.name, String(p)) } }
            let (key, descending) = try AirflowQuery.singleOrder(q, default: "id", allowed: ["id", "name", "pool", "slots"])
            if key == "slots" { pools.sort { $0.slots == $1.slots ? $0.name < $1.name : $0.slots < $1.slots } }
            else if key != "id" { pools.sort { $0.name < $1.name } }
            if descending { pools.reverse() }
            let (limit, offset) = try AirflowQuery.page(q)
            return airflowJSON(["pools": .array(pools.dropFirst(offset).prefix(limit).map(AirflowShapes.pool)), "total_entries": .int(pools.count)])
        }
        routes.on(.get, "/api/v2/pools/{pool_name}", role: .read) { _, c in
            airflowJSON(AirflowShapes.pool(try await pool(try api.param(c, "pool_name"))))
        }
        routes.on(.patch, "/api/v2/pools/{pool_name}", role: .admin) { req, c in
            let name = try api.param(c, "pool_name")
            let existing = try await pool(name)
            let body = try await api.jsonBody(req, c, allowEmpty: false)
            let mask = req.uri.queryParameters.getAll("update_mask").flatMap { $0.split(separator: ",").map { String($0) } }
            for field in mask where !["slots", "description"].contains(field) {
                throw APIError.badRequest("`\(field)` cannot be updated: FlowKit's pools have slots and a description")
            }
            if let renamed = body["name"]?.stringValue ?? body["pool"]?.stringValue, renamed != name {
                throw APIError.badRequest("a pool cannot be renamed (`\(name)` → `\(renamed)`)")
            }
            if body["include_deferred"]?.boolValue == true { throw APIError.badRequest("FlowKit's deferred sensors hold no pool slot: `include_deferred` cannot be true") }
            var slots = existing.slots, description: String? = existing.description
            if mask.isEmpty || mask.contains("slots"), let v = body["slots"], v != .null {
                guard let n = v.intValue else { throw APIError.badRequest("`slots` must be a whole number") }
                slots = n
            }
            if mask.isEmpty || mask.contains("description"), let v = body["description"] {
                description = try FlowAPI.checkedDescription(v.stringValue) ?? ""
            }
            return airflowJSON(AirflowShapes.pool(try await api.store.setPool(name: name, slots: slots, description: description)))
        }
        routes.on(.get, "/api/v2/assets", role: .read) { req, _ in
            let q = req.uri.queryParameters
            try AirflowQuery.rejectUnsupported(q, supported: ["limit", "offset", "order_by", "uri_pattern", "name_pattern", "dag_ids"])
            let numbers = try await api.store.assetNumbers()
            var assets = try await api.store.assets()
            if let p = q.get("uri_pattern") ?? q.get("name_pattern") { assets = assets.filter { AirflowQuery.like($0.uri, String(p)) } }
            let dags = q.getAll("dag_ids").map { String($0) }
            if !dags.isEmpty { assets = assets.filter { !Set($0.consumers + $0.producers).isDisjoint(with: dags) } }
            let (key, descending) = try AirflowQuery.singleOrder(q, default: "id", allowed: ["id", "uri", "name"])
            assets.sort { key == "id" ? (numbers[$0.uri] ?? 0) < (numbers[$1.uri] ?? 0) : $0.uri < $1.uri }
            if descending { assets.reverse() }
            let (limit, offset) = try AirflowQuery.page(q)
            return airflowJSON(["assets": .array(assets.dropFirst(offset).prefix(limit).map { AirflowShapes.asset($0, id: numbers[$0.uri] ?? 0) }),
                                "total_entries": .int(assets.count)])
        }
        routes.on(.get, "/api/v2/assets/events", role: .read) { req, _ in
            let q = req.uri.queryParameters
            try AirflowQuery.rejectUnsupported(q, supported: ["limit", "offset", "order_by", "asset_id"])
            let numbers = try await api.store.assetNumbers()
            var uri: String?
            if let id = q.get("asset_id") {
                guard let n = Int(id) else { throw APIError.badRequest("`asset_id` must be a whole number") }
                guard let u = numbers.first(where: { $0.value == n })?.key else { throw APIError(.notFound, "not_found", "The Asset with ID: `\(n)` was not found") }
                uri = u
            }
            let (_, descending) = try AirflowQuery.singleOrder(q, default: "timestamp", allowed: ["timestamp", "id"])
            let (limit, offset) = try AirflowQuery.page(q)
            let page = try await api.store.assetEventPage(uri: uri, newestFirst: descending, limit: limit, offset: offset)
            var flows: [String: String] = [:]
            for runId in Set(page.events.compactMap(\.runId)) { flows[runId] = try? await api.store.run(runId).flowId }
            return airflowJSON(["asset_events": .array(page.events.map { e in
                AirflowShapes.assetEvent(e, assetId: numbers[e.uri] ?? 0, sourceFlow: e.runId.flatMap { flows[$0] })
            }), "total_entries": .int(page.total)])
        }
        routes.on(.get, "/api/v2/assets/{asset_id}", role: .read) { _, c in
            guard let n = Int(try api.param(c, "asset_id")) else { throw APIError.badRequest("`asset_id` must be a whole number") }
            let numbers = try await api.store.assetNumbers()
            guard let uri = numbers.first(where: { $0.value == n })?.key,
                  let asset = try await api.store.assets().first(where: { $0.uri == uri }) else {
                throw APIError(.notFound, "not_found", "The Asset with ID: `\(n)` was not found")
            }
            return airflowJSON(AirflowShapes.asset(asset, id: n))
        }
    }

    // MARK: helpers

    func knownFlow(_ id: String) async throws -> String {
        do { return try await api.store.flow(id, withDefinition: false).flowId } catch let e as NotFound {
            throw APIError(.notFound, "not_found", "The Dag with ID: `\(id)` was not found (\(e.message))")
        }
    }

    func dagRow(_ id: String) async throws -> DagRow {
        guard let row = try await api.store.dagRows(flowId: id).first else {
            _ = try await knownFlow(id)  // the 404 with the flows it knows
            throw APIError(.notFound, "not_found", "The Dag with ID: `\(id)` was not found")
        }
        return row
    }

    /// The run a path names, which must belong to the path's DAG (or `~`).
    func run(_ c: FlowRequestContext) async throws -> RunRecord {
        let dag = try api.param(c, "dag_id"), id = try api.param(c, "dag_run_id")
        let run: RunRecord
        do { run = try await api.store.run(id) } catch is NotFound {
            throw APIError(.notFound, "not_found", "The DagRun with dag_id: `\(dag)` and run_id: `\(id)` was not found")
        }
        guard dag == "~" || run.flowId == dag else {
            throw APIError(.notFound, "not_found", "The DagRun with dag_id: `\(dag)` and run_id: `\(id)` was not found (it is a run of `\(run.flowId)`)")
        }
        return run
    }

    /// The task instance a path names (`map_index` picks a mapped instance).
    func taskInstance(_ c: FlowRequestContext) async throws -> (RunRecord, TaskInstanceRecord) {
        let run = try await run(c)
        let task = try api.param(c, "task_id")
        let all = try await api.store.taskInstances(runId: run.runId)
        let mapIndex = c.parameters.get("map_index").flatMap { Int($0) }
        guard let t = all.first(where: { $0.taskId == task && (mapIndex ?? -1) == -1 })
                ?? all.first(where: { $0.mapParent == task && $0.mapIndex == mapIndex }) else {
            throw APIError(.notFound, "not_found", "The Task Instance with dag_id: `\(run.flowId)`, run_id: `\(run.runId)`, task_id: `\(task)` was not found")
        }
        return (run, t)
    }

    func isMappedParent(_ t: TaskInstanceRecord) -> Bool { t.mapLength != nil && t.mapParent == nil }

    func version(of run: RunRecord) async throws -> FlowVersionInfo? {
        try await api.store.flowVersions([run.flowId])[run.flowId]?[run.flowVersion]
    }

    /// The definition of the version the run was made from (its tasks, operators, retries).
    func definition(of run: RunRecord) async throws -> FlowDefinition? {
        try? await api.store.definition(flowId: run.flowId, version: run.flowVersion)
    }

    func pool(_ name: String) async throws -> PoolRecord {
        guard let p = try await api.store.pools().first(where: { $0.name == name }) else {
            throw APIError(.notFound, "not_found", "The Pool with name: `\(name)` was not found")
        }
        return p
    }

    func runList(_ query: RunQuery) async throws -> Response {
        let page = try await api.store.runPage(query)
        let versions = page.runs.isEmpty ? [:] : try await api.store.flowVersions(Array(Set(page.runs.map(\.flowId))))
        return airflowJSON(["dag_runs": .array(page.runs.map { AirflowShapes.dagRun($0, version: versions[$0.flowId]?[$0.flowVersion]) }),
                            "total_entries": .int(page.total)])
    }

    func xcomEntry(_ run: RunRecord, _ t: TaskInstanceRecord, value: JSONValue?) -> JSONValue {
        var o: [String: JSONValue] = [
            "key": "return_value", "timestamp": AirflowShapes.time(t.endedAt ?? run.createdAt), "logical_date": AirflowShapes.time(run.logicalDate),
            "run_after": AirflowShapes.time(run.logicalDate), "map_index": .int(t.mapIndex ?? -1), "task_id": .string(AirflowShapes.baseTaskId(t)),
            "dag_id": .string(run.flowId), "run_id": .string(run.runId), "dag_display_name": .string(run.flowId),
            "task_display_name": .string(AirflowShapes.baseTaskId(t)),
        ]
        if let value { o["value"] = value }
        return .object(o)
    }

    func send(_ work: BrokerWork, what: String) async {
        _ = await BrokerRetry.send(work, broker: api.broker, logger: api.logger, what: what)
    }
}

/// Reading Airflow's query parameters.
enum AirflowQuery {
    static let runRangeKeys: [String] = ["run_after", "logical_date", "start_date", "end_date"].flatMap { k in ["gte", "gt", "lte", "lt"].map { "\(k)_\($0)" } }

    /// A parameter FlowKit does not serve is a 400 naming it, never silently ignored (a filter
    /// that does nothing would answer the wrong runs).
    static func rejectUnsupported(_ q: FlatDictionary<Substring, Substring>, supported: [String]) throws {
        for (k, _) in q where !supported.contains(String(k)) {
            throw APIError.badRequest("`\(k)` is not a parameter FlowKit's Airflow API serves here; it serves \(supported.sorted().joined(separator: ", "))")
        }
    }

    static func bool(_ q: FlatDictionary<Substring, Substring>, _ key: String) throws -> Bool? {
        guard let v = q.get(key) else { return nil }
        switch v.lowercased() {
        case "true", "1", "yes": return true
        case "false", "0", "no": return false
        default: throw APIError.badRequest("`\(key)` must be true or false")
        }
    }

    /// `limit` (default 50, at most 1,000 — Airflow's `maximum_page_limit`'s default is 100) and `offset`.
    static func page(_ q: FlatDictionary<Substring, Substring>) throws -> (limit: Int, offset: Int) {
        (try count(q.get("limit").map { Int($0) ?? -1 }, "limit", default: 50),
         try FlowAPI.count(q.get("offset"), "offset", default: 0, max: Int(Int32.max), min: 0))
    }

    static func count(_ v: Int?, _ name: String, default d: Int) throws -> Int {
        guard let v else { return d }
        guard (1...1000).contains(v) else { throw APIError.badRequest("`\(name)` must be a whole number from 1 to 1000") }
        return v
    }

    /// `order_by`: a field, `-` first for descending.
    static func order(_ text: String, allowed: [String]) throws -> (String, Bool) {
        let descending = text.hasPrefix("-")
        let key = descending ? String(text.dropFirst()) : text
        guard allowed.contains(key) else {
            throw APIError.badRequest("Ordering with '\(key)' is disallowed or the attribute does not exist on the model; order by \(allowed.joined(separator: ", "))")
        }
        return (key, descending)
    }

    /// Runs' `order_by`: one or more fields (`-id`, `state`), the first deciding first.
    static func runOrder(_ texts: [String]) throws -> [(column: RunQuery.Column, descending: Bool)] {
        let columns: [String: RunQuery.Column] = ["id": .id, "state": .state, "dag_id": .flowId, "run_id": .runId, "dag_run_id": .runId,
                                                  "logical_date": .logicalDate, "run_after": .logicalDate, "start_date": .startedAt,
                                                  "end_date": .endedAt, "queued_at": .createdAt]
        return try (texts.isEmpty ? ["id"] : texts).flatMap { $0.split(separator: ",").map { String($0) } }.map { text in
            let (key, descending) = try order(text, allowed: columns.keys.sorted())
            return (columns[key]!, descending)
        }
    }

    /// One `order_by` field for the lists FlowKit sorts in memory (DAGs, pools, assets, task
    /// instances): more than one is named as unsupported rather than half applied.
    static func singleOrder(_ q: FlatDictionary<Substring, Substring>, default d: String, allowed: [String]) throws -> (String, Bool) {
        let all = q.getAll("order_by").flatMap { $0.split(separator: ",").map { String($0) } }
        guard all.count <= 1 else { throw APIError.badRequest("FlowKit's Airflow API orders this list by one field, not \(all.count) (`\(all.joined(separator: ","))`)") }
        return try order(all.first ?? d, allowed: allowed)
    }

    /// An instant as Airflow's clients send it: ISO-8601, with `+0000` (Python's `%z`) or no zone
    /// at all (read as UTC, as Airflow reads it).
    static func instant(_ text: String, _ key: String) throws -> Date {
        var t = text
        if let m = t.range(of: #"[+-]\d{4}$"#, options: .regularExpression) {
            t.insert(":", at: t.index(m.lowerBound, offsetBy: 3))
        } else if t.range(of: #"(Z|[+-]\d{2}:\d{2})$"#, options: .regularExpression) == nil {
            t += "Z"
        }
        return try apiInstant(t, key)
    }

    /// Airflow's `*_gte/_gt/_lte/_lt` date filters of runs.
    static func runRanges(_ value: (String) -> String?) throws -> [(column: RunQuery.Column, comparison: RunQuery.Comparison, date: Date)] {
        let columns: [String: RunQuery.Column] = ["run_after": .logicalDate, "logical_date": .logicalDate, "start_date": .startedAt, "end_date": .endedAt]
        let comparisons: [String: RunQuery.Comparison] = ["gte": .gte, "gt": .gt, "lte": .lte, "lt": .lt]
        return try runRangeKeys.compactMap { key in
            guard let v = value(key) else { return nil }
            let cut = key.lastIndex(of: "_")!
            return (columns[String(key[..<cut])]!, comparisons[String(key[key.index(after: cut)...])]!, try instant(v, key))
        }
    }

    /// SQL `ILIKE` as Airflow's `*_pattern` filters use it: wrapped in `%…%`, `%` any run of
    /// characters, `_` any one.
    static func like(_ text: String, _ pattern: String) -> Bool {
        let p = "%\(pattern)%"
        var regex = "^"
        for ch in p {
            switch ch {
            case "%": regex += ".*"
            case "_": regex += "."
            default: regex += NSRegularExpression.escapedPattern(for: String(ch))
            }
        }
        return text.range(of: regex + "$", options: [.regularExpression, .caseInsensitive]) != nil
    }
}

/// A JSON answer of the Airflow API.
func airflowJSON(_ value: JSONValue, status: HTTPResponse.Status = .ok) -> Response {
    Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: value.compactJSON)))
}
