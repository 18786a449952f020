import ArgumentParser
import FlowKit
import Scheduler
import Foundation

struct TriggerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "trigger", abstract: "Trigger a flow run; prints its run id.")
    @Argument(help: "The flow to run.") var flow: String
    @Option(help: "Run conf as a JSON object (overrides the flow's params).") var conf: String?
    @Option(help: "Logical date: YYYY-MM-DD or YYYY-MM-DDTHH:MM in the flow's time zone, or an ISO-8601 instant; default now.") var logicalDate: String?
    @Flag(help: "Follow the run live; exit 0 on success, 1 otherwise.") var wait = false
    @Option(help: "With --wait: stop waiting after this long (90s, 10m, 2h) and exit 3; the run goes on.") var timeout: String?
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        var body = TriggerBody()
        if let conf {
            guard let v = try? JSONValue.parse(conf), let o = v.objectValue else {
                throw CLIError("--conf must be a JSON object, e.g. '{\"seconds\": 5}'", code: 2)
            }
            body.conf = o
        }
        let client = APIClient(settings: try Settings.fromEnvironment())
        if let logicalDate {
            let zone = Instant.parse(logicalDate) == nil ? try await CLITime.zone(of: flow, client: client) : "UTC"
            let (date, note) = try CLITime.parse(logicalDate, flag: "--logical-date", zone: zone)
            if let note { FileHandle.standardError.write(Data((note + "\n").utf8)) }
            body.logicalDate = Instant.format(date, fractionDigits: 3)
        }
        let waitLimit = try timeout.map(parseDuration)
        if timeout != nil && !wait { throw CLIError("--timeout needs --wait", code: 2) }
        let run = try await Self.createRun(client: client, flow: flow, body: body, quiet: json)
        let made = try APIClient.typed(run, as: RunRecord.self, answering: "POST /api/v1/flows/\(flow)/runs")
        let runId = made.runId
        // A paused flow keeps its new run queued: say so now rather than wait in silence.
        if made.state == "queued", (try? await client.get("/api/v1/flows/\(flow)", as: FlowRecord.self))?.isPaused == true {
            FileHandle.standardError.write(Data("flow \(flow) is paused: run \(runId) stays queued until `flowctl flows unpause \(flow)`\n".utf8))
        }
        if !wait {
            if json { printJSON(run) } else { print(runId) }
            return
        }
        if !json { print("triggered \(flow) run \(runId)") }
        let final = try await follow(client: client, runId: runId, quiet: json, limit: waitLimit)
        if json { printJSON(final.raw) }
        if final.run.state != "success" { throw ExitCode(1) }
    }

    /// Posts the trigger with an idempotency key and retries what may be a lost answer (a
    /// timeout, a reset, a 502/503/504) with the same key for up to `patience` seconds: the API
    /// answers a repeated key with the run the first call made, so a retry never makes a second
    /// run, and a run that exists is never reported as failed.
    static func createRun(client: APIClient, flow: String, body: TriggerBody, quiet: Bool, patience: Double = 180) async throws -> JSONValue {
        let key = "flowctl-" + UUID().uuidString.lowercased()
        let start = Date()
        var pause = 0.5, attempt = 1
        while true {
            do {
                return try await client.write("POST", "/api/v1/flows/\(APIClient.segment(flow))/runs", body: body, headers: ["Idempotency-Key": key])
            } catch let e as CLIError where e.transient {
                guard Date().timeIntervalSince(start) + pause < patience else {
                    throw CLIError("\(e.message), \(attempt) times in \(Int(Date().timeIntervalSince(start)))s; the run may have been created "
                                   + "(idempotency key \(key)): see `flowctl runs list --flow \(flow)`", code: e.code)
                }
                if !quiet { FileHandle.standardError.write(Data("warning: \(e.message); trying again in \(pause)s with the same idempotency key\n".utf8)) }
                try await Task.sleep(for: .milliseconds(Int(pause * 1000)))
                pause = min(pause * 2, 10)
                attempt += 1
            }
        }
    }
}

/// `--wait --timeout` ran out: the run goes on untouched; exit 3 says the wait ended, not the run.
func waitTimedOut(runId: String, limit: Double) -> CLIError {
    CLIError("stopped waiting after \(CLITime.span(limit)); run \(runId) goes on untouched: follow it with `flowctl runs show \(runId)`", code: 3)
}

/// Polls a run until it ends, printing each task's state changes; returns the final run (and
/// the API's answer as it came, for `--json`).
///
/// Polls every 0.1 s at first, backing off to every 2 s while nothing changes, so a crowd of
/// waiting clients does not hammer the API. A slow or busy API (timeout, 503) is retried a few
/// times; then the error says so, with the run id to follow it by.
func follow(client: APIClient, runId: String, quiet: Bool, limit: Double? = nil) async throws -> (run: RunRecord, raw: JSONValue) {
    let began = Date()
    var seen: [String: String] = [:]
    var stalled: String?
    var pause = PollBackoff()
    var transientFailures = 0
    while true {
        let raw: JSONValue, run: RunRecord, tasks: [TaskInstanceRecord]
        do {
            raw = try await client.get("/api/v1/runs/\(runId)")
            run = try APIClient.typed(raw, as: RunRecord.self, answering: "GET /api/v1/runs/\(runId)")
            tasks = try await client.get("/api/v1/runs/\(runId)/tasks", as: TaskList.self).tasks
            transientFailures = 0
        } catch let e as CLIError where e.transient {
            transientFailures += 1
            guard transientFailures < 3 else {
                throw CLIError("\(e.message), \(transientFailures) times in a row while following run \(runId); "
                               + "the run goes on: follow it with `flowctl runs show \(runId)`")
            }
            if !quiet { FileHandle.standardError.write(Data("warning: \(e.message); retrying\n".utf8)) }
            try await Task.sleep(for: .seconds(pause.next(changed: false)))
            continue
        }
        var changed = false
        // A mapped task's instances are summed up on its own line (`runs show` lists them).
        for t in tasks where t.mapParent == nil {
            let id = t.taskId, state = t.state
            let key = "\(state)/\(t.tryNumber)/\(t.waitReason ?? "")"
            if seen[id] != key {
                seen[id] = key
                changed = true
                if !quiet && state != "pending" {
                    var line = "  \(id.padding(toLength: 22, withPad: " ", startingAt: 0)) \(state.padding(toLength: 17, withPad: " ", startingAt: 0)) try \(t.tryNumber)/\(t.maxTries)"
                    if ["success", "failed", "up_for_retry"].contains(state) {
                        line += "  \(duration(t.startedAt, t.endedAt))"
                    }
                    if let e = t.error, state != "success" { line += "  \(e.prefix(160))" }
                    if let why = t.waitReason { line += "  \(why)" }
                    if state == "up_for_retry" || state == "up_for_reschedule", let at = t.nextAttemptAt {
                        line += "  \(state == "up_for_retry" ? "retrying" : "next poke") at \(CLITime.clock(at)) (in \(CLITime.span(max(0, at.timeIntervalSinceNow))))"
                    }
                    if let n = t.mapLength { line += "  mapped ×\(n)" }
                    print(line)
                    flushStdout()
                }
            }
        }
        // A run no live worker can take says so once, and again when that changes.
        let why = run.stalledReason
        if why != stalled {
            stalled = why
            changed = true
            if !quiet { print(why.map { "  stalled: \($0)" } ?? "  no longer stalled: a worker can take it"); flushStdout() }
        }
        let state = run.state
        if ["success", "failed", "cancelled"].contains(state) {
            if !quiet {
                print("")
                print(taskTable(tasks))
                print("\nrun \(runId): \(state) in \(duration(run.startedAt, run.endedAt))")
            }
            return (run, raw)
        }
        var next = pause.next(changed: changed)
        if let limit {
            let left = limit - Date().timeIntervalSince(began)
            if left <= 0 { throw waitTimedOut(runId: runId, limit: limit) }
            next = min(next, left)
        }
        try await Task.sleep(for: .seconds(next))
    }
}

/// The pause between two polls: short after a change, growing by half while nothing changes.
struct PollBackoff {
    var initial = 0.1, maximum = 2.0, current = 0.0
    mutating func next(changed: Bool) -> Double {
        current = changed || current == 0 ? initial : min(maximum, current * 1.5)
        return current
    }
}

func taskTable(_ tasks: [TaskInstanceRecord], allInstances: Bool = false) -> String {
    // A mapped task shows as one row with its instances' states; its first instances follow
    // (all of them with --instances), addressed as `task[index]`.
    var instances: [String: [TaskInstanceRecord]] = [:]
    for t in tasks { if let p = t.mapParent { instances[p, default: []].append(t) } }
    var rows: [[String]] = []
    func row(_ t: TaskInstanceRecord, indent: String = "", tryText: String? = nil) -> [String] {
        let outcome = t.result.map { $0 == .null ? (t.error ?? "-") : $0.compactJSON } ?? (t.error ?? "-")
        return [indent + t.taskId, t.state, tryText ?? "\(t.tryNumber)/\(t.maxTries)", duration(t.startedAt, t.endedAt), t.worker ?? "-",
                String(outcome.prefix(90))]
    }
    for t in tasks where t.mapParent == nil {
        guard let length = t.mapLength else { rows.append(row(t)); continue }
        let mine = instances[t.taskId] ?? []
        var counts: [String: Int] = [:]
        for i in mine { counts[i.state, default: 0] += 1 }
        let summary = counts.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        // It runs no try itself: its instances' tries.
        let tries = mine.reduce(0) { $0 + $1.tryNumber }
        var parent = row(t, tryText: "×\(length) · \(tries) tr\(tries == 1 ? "y" : "ies")")
        if t.state == "running" { parent[5] = summary }  // its instances' progress
        rows.append(parent)
        let shown = allInstances ? mine : Array(mine.prefix(mappedRowsShown))
        for i in shown { rows.append(row(i, indent: "  ")) }
        if shown.count < mine.count {
            rows.append(["  …", "", "", "", "", "\(mine.count - shown.count) more (\(summary)); `runs show --instances` lists all"])
        }
    }
    return table(["TASK", "STATE", "TRY", "DURATION", "WORKER", "RESULT"], rows)
}

/// A flow's next run in its own zone (`2026-12-02 00:00:00 +01:00`), or `-` when it has none: no
/// schedule, paused, or inactive.
func nextRun(_ f: FlowRecord) -> String {
    guard f.isActive, !f.isPaused, let next = f.nextRunAt else { return "-" }
    return CLITime.format(next, zone: f.timezone)
}

/// Instances of a mapped task `runs show` lists before it summarises the rest.
let mappedRowsShown = 10

struct FlowsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "flows", abstract: "List, show, pause and unpause flows.",
                                                    subcommands: [List.self, Show.self, Pause.self, Unpause.self, Validate.self, FlowTestCommand.self])

    struct List: AsyncParsableCommand {
        @Flag(help: "Print JSON.") var json = false
        func run() async throws {
            let v = try await APIClient(settings: try Settings.fromEnvironment()).get("/api/v1/flows")
            if json { printJSON(v); return }
            let list = try APIClient.typed(v, as: FlowList.self, answering: "GET /api/v1/flows")
            // NEXT RUN in the flow's own zone, with its offset; none for a paused or inactive flow.
            print(table(["FLOW", "SCHEDULE", "TZ", "NEXT RUN", "PAUSED", "ACTIVE"], list.flows.map { f in
                [f.flowId, f.schedule ?? f.triggers?.joined(separator: "; ") ?? "-", f.timezone,
                 nextRun(f), f.isPaused ? "yes" : "no", f.isActive ? "yes" : "no"]
            }))
            let errors = list.importErrors
            if !errors.isEmpty {
                print("\n\(errors.count) flow\(errors.count == 1 ? "" : "s") could not be registered (import errors):")
                for e in errors { print("  \(e.flowId): \(e.message)") }
            }
        }
    }

    struct Show: AsyncParsableCommand {
        @Argument var flow: String
        @Flag(help: "Print JSON.") var json = false
        func run() async throws {
            let raw = try await APIClient(settings: try Settings.fromEnvironment()).get("/api/v1/flows/\(flow)")
            if json { printJSON(raw); return }
            let f = try APIClient.typed(raw, as: FlowRecord.self, answering: "GET /api/v1/flows/\(flow)")
            print("\(f.flowId)  v\(f.version)  \(f.description)")
            print("schedule: \(f.schedule ?? "none") (\(f.timezone))  next: \(nextRun(f))  paused: \(f.isPaused)")
            if let at = f.source?["flow"]?.stringValue { print("declared at: \(at)") }
            print("\ntasks:")
            for t in f.definition?.tasks ?? [] {
                let at = f.source?["tasks"]?[t.id]?.stringValue.map { "  at \($0)" } ?? ""
                print("  \(t.id)  [\(t.kind)]  after: \(t.upstream.isEmpty ? "-" : t.upstream.joined(separator: ", "))  rule: \(t.triggerRule.rawValue)  retries: \(t.retry.retries)\(at)")
            }
            if let needs = f.needs {
                // What the flow's tasks need from the store; a worker's own FLOWKIT_CONN_* / FLOWKIT_VAR_* also serves.
                for (kind, items) in [("connections", needs.connections), ("variables", needs.variables)] where !items.isEmpty {
                    print("\n\(kind) needed:")
                    for i in items {
                        print("  \(i.name)  \(i.set ? "set" : "NOT SET in the store")  used by: \(i.tasks.joined(separator: ", "))")
                    }
                }
            }
            let runs = f.latestRuns ?? []
            if !runs.isEmpty {
                print("\nlatest runs:")
                print(runTable(runs))
            }
        }
    }

    struct Pause: AsyncParsableCommand {
        @Argument var flow: String
        func run() async throws {
            _ = try await APIClient(settings: try Settings.fromEnvironment()).post("/api/v1/flows/\(flow)/pause")
            print("paused \(flow)")
        }
    }

    struct Unpause: AsyncParsableCommand {
        @Argument var flow: String
        func run() async throws {
            _ = try await APIClient(settings: try Settings.fromEnvironment()).post("/api/v1/flows/\(flow)/unpause")
            print("unpaused \(flow)")
        }
    }

    struct Validate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Validate the flows built into this binary (offline) and print their hashes.")
        func run() async throws {
            let registry = try FlowCatalog.registry()
            for f in registry.flows {
                let d = FlowDefinition(f)
                print("\(f.id)  \(f.tasks.count) tasks  \(try d.contentHash().prefix(12))")
            }
        }
    }
}

func runTable(_ runs: [RunRecord]) -> String {
    table(["RUN", "FLOW", "VERSION", "STATE", "KIND", "LOGICAL DATE", "DURATION"], runs.map { r in
        [r.runId, r.flowId, "v\(r.flowVersion)", r.state + (r.stalledReason == nil ? "" : " (stalled)"), r.triggerKind,
         shortTime(r.logicalDate), duration(r.startedAt, r.endedAt)]
    })
}

struct RunsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "runs", abstract: "List, show, cancel and clear runs.",
                                                    subcommands: [List.self, Show.self, Cancel.self, Clear.self])

    struct List: AsyncParsableCommand {
        @Option(help: "Only this flow.") var flow: String?
        @Option(help: "Only runs in this state.") var state: String?
        @Option(help: "How many.") var limit: Int = 20
        @Option(help: "Continue after this cursor (printed by the previous page).") var cursor: String?
        @Flag(help: "Print JSON.") var json = false
        func run() async throws {
            var q = ["limit=\(limit)"]
            if let flow { q.append("flow_id=\(flow)") }
            if let state { q.append("state=\(state)") }
            if let cursor { q.append("cursor=\(cursor)") }
            let path = "/api/v1/runs?" + q.joined(separator: "&")
            let v = try await APIClient(settings: try Settings.fromEnvironment()).get(path)
            if json { printJSON(v); return }
            let page = try APIClient.typed(v, as: RunPage.self, answering: "GET \(path)")
            print(runTable(page.runs))
            if let next = page.nextCursor { print("more: --cursor \(next)") }
        }
    }

    struct Show: AsyncParsableCommand {
        @Argument var runId: String
        @Flag(help: "Print JSON.") var json = false
        @Flag(help: "List every instance of a mapped task (by default the first \(mappedRowsShown)).") var instances = false
        func run() async throws {
            let c = APIClient(settings: try Settings.fromEnvironment())
            let path = "/api/v1/runs/\(APIClient.segment(runId))"
            let raw = try await c.get(path), rawTasks = try await c.get(path + "/tasks")
            if json { printJSON(["run": raw, "tasks": rawTasks["tasks"] ?? []]); return }
            let r = try APIClient.typed(raw, as: RunRecord.self, answering: "GET \(path)")
            let t = try APIClient.typed(rawTasks, as: TaskList.self, answering: "GET \(path)/tasks")
            print("run \(r.runId) of \(r.flowId): \(r.state)  logical date \(shortTime(r.logicalDate))  took \(duration(r.startedAt, r.endedAt))")
            if let by = r.triggeredBy { print("started by run \(by)") }
            if let why = r.stalledReason { print("stalled: \(why)") }
            print("")
            print(taskTable(t.tasks, allInstances: instances))
        }
    }

    struct Cancel: AsyncParsableCommand {
        @Argument var runId: String
        func run() async throws {
            let raw = try await APIClient(settings: try Settings.fromEnvironment()).post("/api/v1/runs/\(runId)/cancel")
            let r = try APIClient.typed(raw, as: RunRecord.self, answering: "POST /api/v1/runs/\(runId)/cancel")
            print("run \(r.runId): \(r.state)")
        }
    }

    struct Clear: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Re-run failed tasks (or --task ones) and what depends on them.")
        @Argument var runId: String
        @Option(name: .customLong("task"), help: "A task to clear (repeatable).") var tasks: [String] = []
        @Flag(help: "Clear only the failed tasks among those chosen and their descendants.") var onlyFailed = false
        func run() async throws {
            let body = ClearBody(taskIds: tasks.isEmpty ? nil : tasks, onlyFailed: onlyFailed ? true : nil)
            let raw = try await APIClient(settings: try Settings.fromEnvironment()).write("POST", "/api/v1/runs/\(runId)/clear", body: body)
            let r = try APIClient.typed(raw, as: RunRecord.self, answering: "POST /api/v1/runs/\(runId)/clear")
            print("run \(r.runId): \(r.state)")
        }
    }
}

struct LogsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "logs", abstract: "Print a task's log (one try).")
    @Argument var runId: String
    @Argument var taskId: String
    @Option(name: .customLong("try"), help: "Try number (default: the latest).") var tryNumber: Int?
    @Flag(help: "Keep printing new lines until the task ends.") var follow = false
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let c = APIClient(settings: try Settings.fromEnvironment())
        var offset = 0
        var all: [JSONValue] = []
        var shownTry: JSONValue = .null
        while true {
            var path = "/api/v1/runs/\(APIClient.segment(runId))/tasks/\(APIClient.segment(taskId))/logs?offset=\(offset)"
            if let tryNumber { path += "&try=\(tryNumber)" }
            let raw = try await c.get(path)
            let page = try APIClient.typed(raw, as: LogPage.self, answering: "GET \(path)")
            shownTry = .int(page.tryNumber)
            if json { all += raw["lines"]?.arrayValue ?? [] } else {
                for l in page.lines { print("\(shortTime(l.at))  \(l.line)") }
            }
            flushStdout()
            offset = page.nextOffset
            if page.lines.count >= 1000 { continue }
            guard follow else { break }
            let tasks = try await c.get("/api/v1/runs/\(APIClient.segment(runId))/tasks", as: TaskList.self).tasks
            let state = tasks.first { $0.taskId == taskId }?.state ?? ""
            if let s = TaskState(rawValue: state), s.isTerminal, page.lines.isEmpty { break }
            try await Task.sleep(for: .milliseconds(500))
        }
        // The API's shape: `{"tryNumber", "lines", "nextOffset"}`, every page's lines together.
        if json { printJSON(["tryNumber": shownTry, "lines": .array(all), "nextOffset": .int(offset)]) }
    }
}

struct HealthCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "health",
                                                    abstract: "Check the API, PostgreSQL, Redis and the scheduler; exit 1 when one is down.")
    @Flag(help: "Print JSON.") var json = false
    func run() async throws {
        let client = APIClient(settings: try Settings.fromEnvironment())
        let v: JSONValue
        do { v = try await client.get("/health") } catch let e as CLIError {
            print(e.message)
            throw ExitCode(1)
        }
        if json { printJSON(v) } else {
            let report = try APIClient.typed(v, as: HealthReport.self, answering: "GET /health")
            for (k, s) in report.checks.sorted(by: { $0.key < $1.key }) { print("\(k): \(s)") }
        }
    }
}

struct BackfillCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backfill",
        abstract: "Backfills: runs for every cron tick of a flow between two instants, made by the schedulers a few at a time.",
        discussion: """
            `flowctl backfill FLOW --from … --to …` is `flowctl backfill create`. A backfill is planned when it is created \
            (each tick: create a run, re-run the existing one, or skip it and why; `--dry-run` prints the plan only), then the \
            schedulers carry it out, at most --max-active-runs of its runs at a time. Pause, resume or cancel it by its id.
            """,
        subcommands: [Create.self, List.self, Show.self, Pause.self, Resume.self, Cancel.self], defaultSubcommand: Create.self)

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a backfill (or print what it would do, with --dry-run).")
        @Argument var flow: String
        @Option(help: "First tick, inclusive: YYYY-MM-DD or YYYY-MM-DDTHH:MM in the flow's time zone, or an ISO-8601 instant.") var from: String
        @Option(help: "Last tick, inclusive, written as --from is.") var to: String
        @Option(help: "Run conf as a JSON object.") var conf: String?
        @Option(help: "Ticks that already have a run: none (skip them), failed (re-run the failed ones) or all (re-run failed and successful ones).")
        var reprocess: String = "none"
        @Option(help: "At most this many of the backfill's runs queued or running at once.") var maxActiveRuns = 10
        @Flag(help: "Newest tick first (default: oldest first).") var newestFirst = false
        @Flag(help: "Print the plan (each tick: create, rerun or skip and why) without creating anything.") var dryRun = false
        @Flag(help: ArgumentHelp("The same as --reprocess failed.", visibility: .hidden)) var rerunFailed = false
        @Flag(help: "Wait until the backfill has completed, printing its progress.") var wait = false
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            let client = APIClient(settings: try Settings.fromEnvironment())
            let zone = Instant.parse(from) == nil || Instant.parse(to) == nil ? try await CLITime.zone(of: flow, client: client) : "UTC"
            let (fromDate, fromNote) = try CLITime.parse(from, flag: "--from", zone: zone)
            let (toDate, toNote) = try CLITime.parse(to, flag: "--to", zone: zone)
            for note in [fromNote, toNote].compactMap({ $0 }) { FileHandle.standardError.write(Data((note + "\n").utf8)) }
            guard fromDate <= toDate else {
                throw CLIError("--from \(CLITime.format(fromDate, zone: zone)) is after --to \(CLITime.format(toDate, zone: zone))", code: 2)
            }
            guard Reprocess(rawValue: reprocess) != nil else { throw CLIError("--reprocess must be none, failed or all, not `\(reprocess)`", code: 2) }
            var body = BackfillCreateBody(flowId: flow, from: Instant.format(fromDate, fractionDigits: 3), to: Instant.format(toDate, fractionDigits: 3),
                                          reprocess: rerunFailed ? "failed" : reprocess, maxActiveRuns: maxActiveRuns, newestFirst: newestFirst,
                                          dryRun: dryRun)
            if let conf {
                guard let v = try? JSONValue.parse(conf), let o = v.objectValue else { throw CLIError("--conf must be a JSON object", code: 2) }
                body.conf = o
            }
            let v = try await client.write("POST", "/api/v1/backfills", body: body)
            if dryRun {
                if json { printJSON(v); return }
                let plan = try APIClient.typed(v, as: BackfillPlan.self, answering: "POST /api/v1/backfills")
                print("backfill of \(flow) would: create \(plan.counts.create) runs, re-run \(plan.counts.rerun), skip \(plan.counts.skip) ticks")
                print("existing runs each --reprocess re-runs: none 0, failed \(plan.reprocessCounts["failed"] ?? 0), all \(plan.reprocessCounts["all"] ?? 0)")
                if !plan.ticks.isEmpty { print(tickTable(plan.ticks, zone: zone)) }
                return
            }
            let created = try APIClient.typed(v, as: BackfillDetail.self, answering: "POST /api/v1/backfills")
            if json && !wait { printJSON(v); return }
            let b = created.backfill
            if !json {
                print("backfill \(b.id) of \(flow): \(b.counts.create) runs to create, \(b.counts.rerun) to re-run, \(b.counts.skip) ticks skipped")
                print(tickTable(Array(created.ticks.prefix(50)), zone: zone))
                if created.ticks.count > 50 { print("… and \(created.ticks.count - 50) more ticks") }
                print("`flowctl backfill show \(b.id)` shows its progress")
            }
            if wait { try await BackfillCommand.waitFor(b.id, client: client, json: json) }
        }
    }

    /// Polls until the backfill is completed or cancelled; prints each change of its progress.
    static func waitFor(_ id: Int, client: APIClient, json: Bool) async throws {
        var last = ""
        while true {
            let d = try await client.get("/api/v1/backfills/\(id)", as: BackfillDetail.self)
            let line = progress(d.backfill)
            if line != last && !json { print(line); last = line }
            if d.backfill.state == "completed" || d.backfill.state == "cancelled" {
                if json { printJSON(try await client.get("/api/v1/backfills/\(id)")) }
                if d.backfill.state == "cancelled" || (d.backfill.runs["failed"] ?? 0) > 0 { throw ExitCode(1) }
                return
            }
            try await Task.sleep(for: .seconds(1))
        }
    }

    static func progress(_ b: BackfillRecord) -> String {
        let runs = b.runs.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
        let ticks = b.counts.create + b.counts.rerun + b.counts.skip
        return "backfill \(b.id) \(b.state): \(b.ticksDone)/\(ticks) ticks done\(runs.isEmpty ? "" : "; runs: " + runs)"
    }

    static func tickTable(_ ticks: [BackfillTick], zone: String) -> String {
        table(["LOGICAL DATE", "ACTION", "RUN", "RUN STATE", "WHY"], ticks.map { t in
            [CLITime.format(t.logicalDate, zone: zone), t.action + (t.done || t.action == "skip" ? "" : " (pending)"), t.runId ?? "", t.runState ?? "", t.reason ?? ""]
        })
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The newest backfills first.")
        @Option(help: "Only this flow's.") var flow: String?
        @Option(help: "Only those in this state: running, paused, cancelled or completed.") var state: String?
        @Flag(help: "Print JSON.") var json = false
        func run() async throws {
            var path = "/api/v1/backfills?limit=100"
            if let flow { path += "&flow_id=\(APIClient.segment(flow))" }
            if let state { path += "&state=\(APIClient.segment(state))" }
            let client = APIClient(settings: try Settings.fromEnvironment())
            if json { printJSON(try await client.get(path)); return }
            let list = try await client.get(path, as: BackfillList.self).backfills
            print(table(["ID", "FLOW", "STATE", "RANGE", "REPROCESS", "MAX ACTIVE", "TICKS DONE", "RUNS"], list.map { b in
                [String(b.id), b.flowId, b.state, "\(CLITime.format(b.from, zone: "UTC")) → \(CLITime.format(b.to, zone: "UTC"))", b.reprocess.rawValue,
                 String(b.maxActiveRuns), "\(b.ticksDone)/\(b.counts.create + b.counts.rerun + b.counts.skip)",
                 b.runs.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")]
            }))
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "A backfill's progress and every tick of its plan.")
        @Argument var id: Int
        @Flag(help: "Print JSON.") var json = false
        func run() async throws {
            let client = APIClient(settings: try Settings.fromEnvironment())
            if json { printJSON(try await client.get("/api/v1/backfills/\(id)")); return }
            let d = try await client.get("/api/v1/backfills/\(id)", as: BackfillDetail.self)
            let b = d.backfill
            print(progress(b))
            print("flow \(b.flowId), \(CLITime.format(b.from, zone: "UTC")) → \(CLITime.format(b.to, zone: "UTC")), reprocess \(b.reprocess.rawValue), "
                  + "at most \(b.maxActiveRuns) runs at once, \(b.newestFirst ? "newest" : "oldest") first, created by \(b.createdBy ?? "?")")
            if !d.ticks.isEmpty { print(tickTable(d.ticks, zone: "UTC")) }
        }
    }

    struct Pause: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop making runs (the backfill's runs already made go on).")
        @Argument var id: Int
        func run() async throws { try await BackfillCommand.set(id, "pause") }
    }
    struct Resume: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Make runs again.")
        @Argument var id: Int
        func run() async throws { try await BackfillCommand.set(id, "resume") }
    }
    struct Cancel: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop for good, and cancel the backfill's queued runs (running ones finish).")
        @Argument var id: Int
        func run() async throws { try await BackfillCommand.set(id, "cancel") }
    }

    static func set(_ id: Int, _ action: String) async throws {
        let client = APIClient(settings: try Settings.fromEnvironment())
        let raw = try await client.post("/api/v1/backfills/\(id)/\(action)", [:])
        let d = try APIClient.typed(raw, as: BackfillDetail.self, answering: "POST /api/v1/backfills/\(id)/\(action)")
        print(progress(d.backfill))
    }
}

struct ApprovalsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "approvals", abstract: "Approval tasks waiting for a person's decision, and deciding them.",
        subcommands: [List.self, Decide.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The approvals waiting for a decision, oldest first (--all: decided ones too, newest first).")
        @Flag(help: "Every approval, decided or not.") var all = false
        @Option(help: "Only this run's.") var run: String?
        @Flag(help: "Print JSON.") var json = false
        func run() async throws {
            var path = "/api/v1/approvals?state=\(all ? "all" : "waiting")"
            if let run { path += "&run_id=\(APIClient.segment(run))" }
            let client = APIClient(settings: try Settings.fromEnvironment())
            if json { printJSON(try await client.get(path)); return }
            let list = try await client.get(path, as: ApprovalList.self).approvals
            if list.isEmpty { print(all ? "no approval yet" : "no approval is waiting for a decision"); return }
            print(table(["RUN", "TASK", "PROMPT", "OPTIONS", "STATE", "ASKED", "TIMES OUT", "DECISION"], list.map { a in
                [a.runId, a.taskId, a.prompt, a.options.joined(separator: "|"), a.state, CLITime.format(a.requestedAt, zone: "UTC"),
                 a.timeoutAt.map { CLITime.format($0, zone: "UTC") } ?? "never",
                 a.decision.map { "\($0) by \(a.decidedBy ?? "?")" + (a.comment.map { ": \($0)" } ?? "") } ?? ""]
            }))
        }
    }

    struct Decide: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Decide an approval: `flowctl approvals decide RUN TASK DECISION [--comment …]`.",
            discussion: "RUN may be a unique part of the run id. The decision must be one of the approval's options; --values fills its form (a JSON object).")
        @Argument(help: "The run (a unique part of its id works).") var run: String
        @Argument(help: "The approval task.") var task: String
        @Argument(help: "One of the approval's options (approve, reject, or a branch).") var decision: String
        @Option(help: "Why, in words (kept with the decision and in the audit log).") var comment: String?
        @Option(help: "The form's values, as a JSON object.") var values: String?
        func run() async throws {
            var body = DecisionBody(decision: decision, comment: comment)
            if let values {
                guard let v = try? JSONValue.parse(values), let o = v.objectValue else { throw CLIError("--values must be a JSON object", code: 2) }
                body.values = o
            }
            let path = "/api/v1/runs/\(APIClient.segment(run))/tasks/\(APIClient.segment(task))/decision"
            let raw = try await APIClient(settings: try Settings.fromEnvironment()).write("POST", path, body: body)
            let a = try APIClient.typed(raw, as: ApprovalRecord.self, answering: "POST \(path)")
            print("\(a.runId) \(a.taskId): decided `\(a.decision ?? decision)` by \(a.decidedBy ?? "?"); the task ends with it in a moment")
        }
    }
}

struct PoolsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pools", abstract: "List, create, resize and delete pools: named slots that limit how many tasks run at once across flows.",
        subcommands: [List.self, Set.self, Delete.self])

    struct List: AsyncParsableCommand {
        @Flag(help: "Print JSON.") var json = false
        func run() async throws {
            let v = try await APIClient(settings: try Settings.fromEnvironment()).get("/api/v1/pools")
            if json { printJSON(v); return }
            let pools = try APIClient.typed(v, as: PoolList.self, answering: "GET /api/v1/pools").pools
            print(table(["POOL", "SLOTS", "USED", "WAITING", "DESCRIPTION"], pools.map { p in
                [p.name, "\(p.slots)", "\(p.usedSlots)", "\(p.waiting)", p.description]
            }))
        }
    }

    struct Set: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a pool, or change its slots; waiting tasks start at once if it grew.")
        @Argument var name: String
        @Option(help: "How many slots (0 pauses the pool's tasks).") var slots: Int
        @Option(help: "What the pool protects.") var description: String?
        func run() async throws {
            let path = "/api/v1/pools/\(APIClient.segment(name))"
            let raw = try await APIClient(settings: try Settings.fromEnvironment()).write("PUT", path, body: PoolBody(slots: slots, description: description))
            let p = try APIClient.typed(raw, as: PoolRecord.self, answering: "PUT \(path)")
            print("pool \(name): \(p.slots) slots, \(p.usedSlots) used, \(p.waiting) waiting")
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a pool no active flow uses.")
        @Argument var name: String
        func run() async throws {
            _ = try await APIClient(settings: try Settings.fromEnvironment()).delete("/api/v1/pools/\(APIClient.segment(name))")
            print("deleted pool \(name)")
        }
    }
}

struct NotificationsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "notifications", abstract: "The notification outbox: what was sent, to whom, and how each attempt went.",
                                                    subcommands: [List.self], defaultSubcommand: List.self)

    struct List: AsyncParsableCommand {
        @Option(help: "Only this run's notifications.") var run: String?
        @Option(help: "pending, delivered or failed.") var status: String?
        @Option(help: "How many (newest first).") var limit: Int = 50
        @Flag(help: "Print JSON.") var json = false
        func run() async throws {
            var path = "/api/v1/notifications?limit=\(limit)"
            if let run { path += "&run_id=\(APIClient.segment(run))" }
            if let status { path += "&status=\(APIClient.segment(status))" }
            let v = try await APIClient(settings: try Settings.fromEnvironment()).get(path)
            if json { printJSON(v); return }
            let list = try APIClient.typed(v, as: NotificationList.self, answering: "GET \(path)").notifications
            print(table(["CREATED", "EVENT", "NOTIFIER", "RUN", "TASK", "STATUS", "ATTEMPTS", "LAST ERROR"], list.map { n in
                [shortTime(n.createdAt), n.event, n.notifier, n.runId, n.taskId.map { t in "\(t) try \(n.tryNumber ?? 0)" } ?? "-",
                 n.status, "\(n.attempts.count)", String((n.lastError ?? "").prefix(60))]
            }))
        }
    }
}

struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "audit", abstract: "The audit log: every write, with the token that made it (admin token).")
    @Option(help: "Only this actor (token:NAME, config:admin#1, webhook:FLOW, …).") var actor: String?
    @Option(help: "Only this action (trigger, cancel, clear, mark, pause, unpause, pool_set, …).") var action: String?
    @Option(help: "How many (newest first).") var limit: Int = 50
    @Flag(help: "Print JSON.") var json = false
    func run() async throws {
        var path = "/api/v1/audit?limit=\(limit)"
        if let actor { path += "&actor=\(APIClient.segment(actor))" }
        if let action { path += "&action=\(APIClient.segment(action))" }
        let v = try await APIClient(settings: try Settings.fromEnvironment()).get(path)
        if json { printJSON(v); return }
        let entries = try APIClient.typed(v, as: AuditPage.self, answering: "GET \(path)").entries
        print(table(["AT", "ACTOR", "ACTION", "TARGET", "DETAIL"], entries.map { e in
            [shortTime(e.at), e.actor, e.action, e.target, String(e.detail.compactJSON.prefix(80))]
        }))
    }
}

struct AssetsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "assets", abstract: "Assets: list them, show their events, post an event from outside.",
                                                    subcommands: [List.self, Events.self, Event.self])

    struct List: AsyncParsableCommand {
        @Flag(help: "Print JSON.") var json = false
        func run() async throws {
            let v = try await APIClient(settings: try Settings.fromEnvironment()).get("/api/v1/assets")
            if json { printJSON(v); return }
            let assets = try APIClient.typed(v, as: AssetList.self, answering: "GET /api/v1/assets").assets
            print(table(["ASSET", "EVENTS", "LAST EVENT", "UPDATED BY", "SCHEDULED FLOWS"], assets.map { a in
                [a.uri, "\(a.events)", shortTime(a.lastEventAt), (a.producerTasks + a.sources).joined(separator: ", "), a.consumers.joined(separator: ", ")]
            }))
        }
    }

    struct Events: AsyncParsableCommand {
        @Argument var uri: String
        @Flag(help: "Print JSON.") var json = false
        func run() async throws {
            var allowed = CharacterSet.urlQueryAllowed
            allowed.remove(charactersIn: "&+=?#")
            let q = uri.addingPercentEncoding(withAllowedCharacters: allowed) ?? uri
            let v = try await APIClient(settings: try Settings.fromEnvironment()).get("/api/v1/assets/events?uri=\(q)")
            if json { printJSON(v); return }
            let events = try APIClient.typed(v, as: AssetEventList.self, answering: "GET /api/v1/assets/events").events
            print(table(["ID", "AT", "SOURCE", "RUN", "TASK", "EXTRA"], events.map { e in
                ["\(e.id)", shortTime(e.at), e.source, e.runId ?? "-", e.taskId ?? "-", String(e.extra.compactJSON.prefix(60))]
            }))
        }
    }

    struct Event: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Record an event for an asset; the flows scheduled on it start.")
        @Argument var uri: String
        @Option(help: "A JSON object the triggered runs see with the event.") var extra: String?
        func run() async throws {
            var body = AssetEventBody(uri: uri)
            if let extra {
                guard let v = try? JSONValue.parse(extra), let o = v.objectValue else { throw CLIError("--extra must be a JSON object", code: 2) }
                body.extra = o
            }
            let raw = try await APIClient(settings: try Settings.fromEnvironment()).write("POST", "/api/v1/assets/events", body: body)
            let r = try APIClient.typed(raw, as: AssetEventPosted.self, answering: "POST /api/v1/assets/events")
            print("event \(r.eventId) for \(uri)" + (r.runs.isEmpty ? "; no flow started" : "; started \(r.runs.joined(separator: ", "))"))
        }
    }
}

struct TasksCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tasks", abstract: "Act on a run's task instances.",
                                                    subcommands: [Mark.self])

    struct Mark: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Mark a task instance success or failed by hand (its downstream tasks then run as if it had ended so).")
        @Argument var runId: String
        @Argument var taskId: String
        @Option(help: "success or failed.") var state: String
        func run() async throws {
            guard state == "success" || state == "failed" else { throw CLIError("--state must be success or failed, not `\(state)`", code: 2) }
            let path = "/api/v1/runs/\(APIClient.segment(runId))/tasks/\(APIClient.segment(taskId))/mark"
            let raw = try await APIClient(settings: try Settings.fromEnvironment()).write("POST", path, body: MarkBody(state: state))
            let r = try APIClient.typed(raw, as: RunRecord.self, answering: "POST \(path)")
            print("run \(runId): task \(taskId) marked \(state); run \(r.state)")
        }
    }
}

struct WorkersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "workers",
                                                    abstract: "List the workers: state, queues, load, and which flow versions each can run.")
    @Flag(help: "Also list, for each worker, the version of every flow it carries.") var flows = false
    @Flag(help: "Print JSON (the API's response).") var json = false

    func run() async throws {
        let v = try await APIClient(settings: try Settings.fromEnvironment()).get("/api/v1/workers")
        if json { printJSON(v); return }
        let workers = try APIClient.typed(v, as: WorkerList.self, answering: "GET /api/v1/workers").workers
        guard !workers.isEmpty else { print("No worker has reported yet: start one with `flowctl worker`."); return }
        print(table(["WORKER", "STATE", "HOST", "QUEUES", "RUNNING", "HEARTBEAT", "FLOWS"], workers.map { w in
            [w.name, w.state, w.host, w.queues.joined(separator: ","), "\(w.running)/\(w.concurrency)",
             String(format: "%.0fs ago", w.heartbeatAgeSeconds), w.flows.map { "\($0.count)" } ?? "?"]
        }))
        guard flows else { return }
        for w in workers {
            print("\n\(w.name):")
            for f in w.flows ?? [] {
                print("  \(f.flowId)  \(f.version.map { "v\($0)" } ?? "unregistered")  \(f.hash.prefix(12))")
            }
        }
    }
}

struct DeadLettersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "dead-letters",
                                                    abstract: "What workers and schedulers could not use (newest first), before the capped list drops it (admin token).")
    @Option(help: "How many.") var limit: Int = 20
    @Option(help: "Skip this many of the newest.") var offset: Int = 0
    @Flag(help: "Print JSON (the API's response).") var json = false
    func run() async throws {
        let v = try await APIClient(settings: try Settings.fromEnvironment()).get("/api/v1/dead-letters?limit=\(limit)&offset=\(offset)")
        if json { printJSON(v); return }
        let page = try APIClient.typed(v, as: DeadLetterPage.self, answering: "GET /api/v1/dead-letters")
        let entries = page.entries, total = page.total
        guard !entries.isEmpty else { print(total == 0 ? "The dead-letter list is empty." : "No entries past \(offset) (the list has \(total))."); return }
        print(table(["AT", "BY", "REASON"], entries.map { e in
            let at = e["at"]?.doubleValue.map { Instant.format(Date(timeIntervalSince1970: $0)) }
            return [shortTime(at), e["worker"]?.stringValue ?? e["scheduler"]?.stringValue ?? "", String((e["reason"]?.stringValue ?? e["raw"]?.stringValue ?? "").prefix(140))]
        }))
        print("\(entries.count) of \(total) (the list keeps the newest \(page.capacity)); --json shows each message as received")
    }
}
