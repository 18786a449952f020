public import FlowKit
public import Foundation
import ProcessSupport
import Scheduler
import WorkerRuntime

/// A flow run once in this process, without PostgreSQL, Redis or a scheduler — Airflow's
/// `airflow dags test`, Prefect's flow-as-a-function: the real task code (Swift, shell, SQL,
/// Python, dbt and S3 tasks, sensors) through the same runner a worker uses, in dependency
/// order, with the scheduler's own state machine deciding trigger rules, branches and skips,
/// mapped tasks expanded as the scheduler expands them, retries (their delays cut with
/// `noDelay`), timeouts, and params validated as a trigger validates them.
///
/// Celery tasks, trigger-flow tasks and external-run sensors need the servers; here they fail
/// with "not runnable in-process", and so does the run.
///
///     let run = try await FlowTestRun.run(myFlow, .init(conf: ["pick": "right"], noDelay: true))
///     #expect(run.succeeded)
///     #expect(run["left"]?.state == .skipped)
///     #expect(run.result(of: "join") == ["followed": ["right"]])
public struct FlowTestRun: Sendable {
    public struct Options: Sendable {
        /// The trigger's conf, validated against the flow's params.
        public var conf: [String: JSONValue]
        /// The run's logical date (its data interval is that instant, as for a manual trigger).
        public var logicalDate: Date
        /// Run only this task and the tasks it depends on.
        public var task: String?
        /// Retry delays become zero and sensor pokes come at most a second apart.
        public var noDelay: Bool
        /// Named connections (`FLOWKIT_CONN_<NAME>` by default).
        public var connections: [String: String]
        /// Variables (`FLOWKIT_VAR_<NAME>` by default).
        public var variables: [String: String] = namedVariables()
        /// Where Python and dbt virtualenvs live (`FLOWKIT_HOME`, default `.flowkit`).
        public var home: String
        /// Where each log line goes, as `task_id | line` (secrets masked); by default nowhere.
        public var log: @Sendable (String) -> Void

        public init(conf: [String: JSONValue] = [:], logicalDate: Date = Date(), task: String? = nil, noDelay: Bool = false,
                    connections: [String: String] = namedConnections(),
                    home: String = ProcessInfo.processInfo.environment["FLOWKIT_HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? ".flowkit",
                    log: @escaping @Sendable (String) -> Void = { _ in }) {
            self.conf = conf; self.logicalDate = logicalDate; self.task = task; self.noDelay = noDelay
            self.connections = connections; self.home = home; self.log = log
        }
    }

    /// What became of one task (a mapped task's instances in `instances`).
    public struct TaskOutcome: Sendable {
        public var taskId: String
        public var state: TaskState
        /// Tries made (0 for a task that never ran).
        public var tries: Int
        public var result: JSONValue?
        public var error: String?
        public var log: [String]
        public var instances: [TaskOutcome]
        public var seconds: Double
    }

    public let flowId: String
    public let runId: String
    public let state: RunState
    /// In the order they ended.
    public let outcomes: [TaskOutcome]
    public let params: [String: JSONValue]

    public var succeeded: Bool { state == .success }
    public subscript(task: String) -> TaskOutcome? { outcomes.first { $0.taskId == task } }
    public func result(of task: String) -> JSONValue? { self[task]?.result }

    /// Runs `flow` once. Throws before anything runs when the flow is invalid, the conf does
    /// not fit its params, or `options.task` is not one of its tasks.
    public static func run(_ flow: Flow, _ options: Options = Options()) async throws -> FlowTestRun {
        try flow.validate()
        let engine = try Engine(flow, options)
        return try await engine.run()
    }
}

/// One in-process run's bookkeeping; not shared across tasks (tasks run one at a time).
final class Engine: @unchecked Sendable {
    let flow: Flow
    let graph: FlowGraph
    let options: FlowTestRun.Options
    let params: [String: JSONValue]
    let runId: String
    let masker: SecretMasker
    let bodies: [String: FlowTask]
    var states: [String: TaskState] = [:]
    var results: [String: JSONValue] = [:]
    var outcomes: [FlowTestRun.TaskOutcome] = []
    let included: Set<String>

    init(_ flow: Flow, _ options: FlowTestRun.Options) throws {
        self.flow = flow
        self.options = options
        graph = FlowGraph(FlowDefinition(flow))
        params = try graph.definition.resolveParams(conf: options.conf)
        runId = "test__" + Instant.format(options.logicalDate)
        masker = SecretMasker(connections: options.connections)
        bodies = Dictionary(uniqueKeysWithValues: flow.tasks.map { ($0.id, $0) })
        if let only = options.task {
            guard graph.tasks[only] != nil else {
                throw TaskError("flow `\(flow.id)` has no task `\(only)`; its tasks: \(flow.tasks.map(\.id).joined(separator: ", "))")
            }
            included = Self.ancestors(of: only, in: graph).union([only])
        } else {
            included = Set(graph.definition.tasks.map(\.id))
        }
        for t in graph.definition.tasks { states[t.id] = included.contains(t.id) ? .pending : .skipped }
    }

    static func ancestors(of task: String, in graph: FlowGraph) -> Set<String> {
        var out = Set<String>(), stack = graph.tasks[task]?.upstream ?? []
        while let t = stack.popLast() {
            guard out.insert(t).inserted else { continue }
            stack += graph.tasks[t]?.upstream ?? []
        }
        return out
    }

    func run() async throws -> FlowTestRun {
        var queue = RunStateMachine.startingTasks(graph).filter { included.contains($0) }
        for t in queue { states[t] = .queued }
        while !queue.isEmpty {
            let id = queue.removeFirst()
            let outcome = await runTask(id)
            states[id] = outcome.state
            if let r = outcome.result { results[id] = r }
            outcomes.append(outcome)
            var ended = [id]
            if graph.tasks[id]?.kind == TaskBody.branchKind, outcome.state == .success {
                let chosen = outcome.result?.arrayValue?.compactMap(\.stringValue) ?? []
                let notChosen = RunStateMachine.notChosen([id: chosen], in: graph).filter { states[$0] == .pending }
                for t in notChosen { end(t, .skipped, "not chosen by branch `\(id)`") }
                ended += notChosen
            }
            let wave = RunStateMachine.settle(after: ended, states: states, in: graph)
            for t in wave.skipped where states[t] == .pending { end(t, .skipped, "skipped by its trigger rule") }
            for t in wave.upstreamFailed where states[t] == .pending { end(t, .upstreamFailed, "an upstream task failed") }
            for t in RunStateMachine.dispatchOrder(wave.ready, in: graph) where states[t] == .pending && included.contains(t) {
                states[t] = .queued
                queue.append(t)
            }
        }
        let leaves = graph.leaves.filter { included.contains($0) } .union(options.task.map { [$0] } ?? [])
        let state = finalRunState(leafStates: leaves.map { states[$0] ?? .pending })
        return FlowTestRun(flowId: flow.id, runId: runId, state: state, outcomes: outcomes, params: params)
    }

    func end(_ task: String, _ state: TaskState, _ why: String) {
        states[task] = state
        options.log("\(task) | \(state.rawValue): \(why)")
        outcomes.append(.init(taskId: task, state: state, tries: 0, result: nil, error: state == .skipped ? nil : why, log: [], instances: [], seconds: 0))
    }

    // MARK: One task

    func runTask(_ id: String) async -> FlowTestRun.TaskOutcome {
        let def = graph.tasks[id]!
        let started = Date()
        guard let source = def.mapOver else {
            var o = await runTries(id, mapIndex: nil, item: nil)
            o.seconds = Date().timeIntervalSince(started)
            return o
        }
        // Expanded as the scheduler expands it: a list, at most the cap; empty means skipped.
        let value: JSONValue?
        switch source {
        case .result(let u): value = results[u]
        case .param(let p): value = params[p]
        }
        func ended(_ state: TaskState, _ why: String) -> FlowTestRun.TaskOutcome {
            options.log("\(id) | \(why)")
            return .init(taskId: id, state: state, tries: 0, result: nil, error: state == .failed ? why : nil, log: [why], instances: [], seconds: 0)
        }
        guard case .array(let items)? = value else {
            return ended(.failed, "mapped task `\(id)` maps over \(source.phrase), which is \(value.map { "a JSON \($0.typeName)" } ?? "nothing"), not a list")
        }
        if items.isEmpty { return ended(.skipped, "mapped over an empty list (\(source.phrase)): no instances") }
        let cap = def.maxMapLength ?? defaultMaxMapLength
        if items.count > cap { return ended(.failed, "mapped task `\(id)` would expand to \(items.count) instances, over its cap of \(cap)") }
        var instances: [FlowTestRun.TaskOutcome] = []
        for (i, item) in items.enumerated() { instances.append(await runTries(id, mapIndex: i, item: item)) }
        let bad = instances.enumerated().filter { [.failed, .upstreamFailed].contains($0.element.state) }
        var o = FlowTestRun.TaskOutcome(taskId: id, state: .success, tries: instances.map(\.tries).max() ?? 0, result: nil, error: nil, log: [], instances: instances,
                                        seconds: Date().timeIntervalSince(started))
        if let first = bad.first {
            o.state = .failed
            o.error = "\(bad.count) of \(items.count) mapped instances failed; the first, [\(first.offset)]: \(first.element.error ?? "?")"
        } else if instances.contains(where: { $0.state == .success }) {
            o.result = .array(instances.map { $0.result ?? .null })
        } else {
            o.state = .skipped
        }
        return o
    }

    /// Every try of a task (or of one mapped instance), with its retry policy.
    func runTries(_ id: String, mapIndex: Int?, item: JSONValue?) async -> FlowTestRun.TaskOutcome {
        let def = graph.tasks[id]!
        let task = bodies[id]!
        let name = mapIndex.map { MappedInstance.id(id, index: $0) } ?? id
        let lines = LineCollector()
        let log: @Sendable (String) -> Void = { [masker, options] line in
            let masked = masker.mask(line)
            lines.add(masked)
            options.log("\(name) | \(masked)")
        }
        func outcome(_ state: TaskState, tries: Int, result: JSONValue? = nil, error: String? = nil) -> FlowTestRun.TaskOutcome {
            .init(taskId: name, state: state, tries: tries, result: result.map(masker.mask), error: error.map(masker.mask), log: lines.all,
                  instances: [], seconds: 0)
        }
        if let why = notRunnable(task) {
            log("not runnable in-process: \(why)")
            return outcome(.failed, tries: 0, error: "not runnable in-process: \(why)")
        }
        let upstream = Dictionary(def.upstream.compactMap { u in results[u].map { (u, $0) } }, uniquingKeysWith: { a, _ in a })
        var tryNumber = 1
        while true {
            var ctx = TaskContext(flowId: flow.id, runId: runId, taskId: id, tryNumber: tryNumber, logicalDate: options.logicalDate,
                                  dataIntervalStart: options.logicalDate, dataIntervalEnd: options.logicalDate, params: params,
                                  upstream: upstream, connections: options.connections, log: TaskLogger(log),
                                  commandRunner: SubprocessCommandRunner(), mapIndex: mapIndex, mapItem: item)
            ctx.sqlRunner = PGSQLRunner()
            ctx.resultLoader = LocalResults(results)
            ctx.variables = options.variables
            log("try \(tryNumber) of \(def.retry.maxTries)")
            switch await attempt(task, def, ctx, log: log) {
            case .success(let value):
                return outcome(.success, tries: tryNumber, result: value)
            case .failure(let e as TaskSkipped):
                log("skipped: \(e.reason)")
                return outcome(.skipped, tries: tryNumber, error: e.reason)
            case .failure(let e as SensorTimedOut):
                return outcome(e.soft ? .skipped : .failed, tries: tryNumber, error: e.message)
            case .failure(let error):
                let message = "\(error)"
                log("task failed: \(message)")
                guard tryNumber < def.retry.maxTries else { return outcome(.failed, tries: tryNumber, error: message) }
                let delay = options.noDelay ? 0 : def.retry.delay(afterTry: tryNumber)
                log("up for retry in \(String(format: "%.1f", delay))s")
                if delay > 0 { try? await Task.sleep(for: .milliseconds(Int(delay * 1000))) }
                tryNumber += 1
            }
        }
    }

    /// Why a task needs the servers, or nil.
    func notRunnable(_ task: FlowTask) -> String? {
        switch task.body {
        case .celery(let name): return "`\(task.id)` is a Celery task (`\(name)`): it runs on a Celery worker"
        case .triggerFlow(let spec): return "`\(task.id)` starts a run of `\(spec.flow)`: the scheduler does that"
        case .approval: return "`\(task.id)` waits for a person's decision: decide it on a running server (`flowctl approvals decide`)"
        case .sensor(let spec, _) where spec.externalFlow != nil:
            return "`\(task.id)` waits for a run of `\(spec.externalFlow!)`, which only the scheduler can look up"
        default: return nil
        }
    }

    struct SensorTimedOut: Error { let message: String; let soft: Bool }

    /// One try: a sensor pokes until ready or out of time; every body runs within the task's timeout.
    func attempt(_ task: FlowTask, _ def: FlowDefinition.TaskDefinition, _ ctx: TaskContext,
                 log: @escaping @Sendable (String) -> Void) async -> Result<JSONValue?, any Error> {
        let targets = graph.downstream[task.id] ?? []
        let home = options.home
        let body: @Sendable () async throws -> JSONValue? = {
            let value = try await TaskBodyRunner.run(task, ctx, timeout: def.timeoutSeconds, home: home, branchTargets: targets)
            if let value { _ = try checkResultSize(value, task: task.id) }
            return value
        }
        guard case .sensor(let spec, _) = task.body else { return await withTimeout(def.timeoutSeconds, body) }
        let timeout = spec.timeoutParam.flatMap { params[$0]?.doubleValue } ?? spec.timeoutSeconds
        let interval = options.noDelay ? min(spec.pokeIntervalSeconds, 1) : spec.pokeIntervalSeconds
        let first = Date()
        while true {
            let r = await withTimeout(def.timeoutSeconds, body)
            guard case .failure(let e as SensorNotReady) = r else { return r }
            log("poke: not yet — \(e.reason)")
            let waited = Date().timeIntervalSince(first)
            if waited + interval > timeout {
                let message = "sensor timed out after \(Self.seconds(timeout))s: \(e.reason)"
                log(spec.softFail ? "skipped (soft fail): \(message)" : message)
                return .failure(SensorTimedOut(message: message, soft: spec.softFail))
            }
            try? await Task.sleep(for: .milliseconds(Int(interval * 1000)))
        }
    }

    static func seconds(_ s: Double) -> String { s == s.rounded() ? String(Int(s)) : String(s) }

    func withTimeout(_ seconds: Double?, _ body: @escaping @Sendable () async throws -> JSONValue?) async -> Result<JSONValue?, any Error> {
        guard let seconds else {
            do { return .success(try await body()) } catch { return .failure(error) }
        }
        return await withTaskGroup(of: Result<JSONValue?, any Error>?.self) { group in
            group.addTask { do { return .success(try await body()) } catch { return .failure(error) } }
            group.addTask {
                try? await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
                return Task.isCancelled ? nil : .failure(TaskError("timed out after \(seconds)s (execution timeout)"))
            }
            var first: Result<JSONValue?, any Error>?
            for await r in group { if let r { first = r; group.cancelAll(); break } }
            return first ?? .failure(CancellationError())
        }
    }
}

/// Results of the run so far, for `ctx.result(of:)` of tasks further up than the direct upstream.
struct LocalResults: ResultLoader {
    let results: [String: JSONValue]
    init(_ results: [String: JSONValue]) { self.results = results }
    func result(of task: String, for context: TaskContext) async throws -> JSONValue? { results[task] }
}

final class LineCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []
    func add(_ line: String) { lock.withLock { lines.append(line) } }
    var all: [String] { lock.withLock { lines } }
}
