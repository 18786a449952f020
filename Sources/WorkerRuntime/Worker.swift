import CeleryProtocol
public import FlowKit
import Foundation
import Logging
import ProcessSupport
public import RedisClient

/// A worker process: claims task messages from its queues, runs them with at most
/// `concurrency` at once, reports through the events stream, and acknowledges each message only
/// once its outcome is reported. Needs Redis only — never the database.
///
/// It is three parts and the routing between them, as River splits producer, executor and
/// completer: the `Claimer` takes messages from Redis and gives back what must not run here,
/// the `Executor` runs tries in its slots, and the `Reporter` reports outcomes, heart-beats and
/// ships logs. This class decodes each message and decides which part does what with it.
///
/// ```swift
/// let worker = Worker(redis: try RedisConfig(url: url), flows: allFlows, config: WorkerConfig(queues: ["default"]))
/// try await worker.run()   // until worker.shutdown()
/// ```
public final class Worker: Sendable {
    public let config: WorkerConfig
    let redis: RedisConnection
    let claimer: Claimer
    let executor: Executor
    let reporter: Reporter
    let clock: any WallClock
    /// The tasks this worker can run, by Celery task name (`flow.task`).
    let tasks: [String: FlowTask]
    let state = WorkerState()
    let logger: Logger
    let connections: [String: String]
    /// The worker's own connections and variables, and the keys that open the store's.
    let secrets: TaskSecrets
    /// What each task that needs something from the store needs, by Celery task name.
    let storeNeeds: [String: (connections: [String], variables: [String])]
    /// Hides connection secrets in task logs and errors.
    let masker: SecretMasker
    let flowsById: [String: Flow]
    /// Each flow's content hash: the version of it this worker runs. A message for another
    /// version is handed back for a worker that has it.
    let flowHashes: [String: String]

    /// Flows this worker's binary carries but could not admit, by id, with why: their tasks fail
    /// with that message instead of "unknown task".
    let importErrors: [String: String]

    public init(redis: RedisConfig, flows: [Flow], config: WorkerConfig, importErrors: [FlowImportError] = []) {
        self.config = config
        self.importErrors = Dictionary(importErrors.map { ($0.flowId, $0.message) }, uniquingKeysWith: { a, _ in a })
        let shared = RedisConnection(redis, label: "worker-redis")
        self.redis = shared
        self.clock = config.clock
        var t: [String: FlowTask] = [:]
        t.reserveCapacity(flows.reduce(0) { $0 + $1.tasks.count })
        var targets: [String: [String]] = [:]
        for f in flows {
            for task in f.tasks { t[FlowTaskInvocation.taskName(flow: f.id, task: task.id)] = task }
            for task in f.tasks {
                for u in task.upstream { targets[FlowTaskInvocation.taskName(flow: f.id, task: u), default: []].append(task.id) }
            }
        }
        self.tasks = t
        self.executor = Executor(concurrency: config.concurrency, home: config.home, branchTargets: targets)
        self.storeNeeds = t.compactMapValues { task in
            let c = task.neededConnections, v = task.neededVariables
            return c.isEmpty && v.isEmpty ? nil : (c, v)
        }
        self.flowsById = Dictionary(flows.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        self.flowHashes = Self.contentHashes(flows)
        var l = Logger(label: "flowkit.worker")
        l[metadataKey: "worker"] = "\(config.name)"
        self.logger = l
        let retry = Retry(logger: l)
        self.claimer = Claimer(config: config, redis: shared, blocking: RedisConnection(redis, label: "worker-blocking", readTimeout: 10),
                               logger: l, retry: retry)
        self.reporter = Reporter(config: config, redis: shared, logger: l, retry: retry)
        // After a Sentinel failover, before anything else runs on the new master: the reports
        // the old master may have taken with it.
        for connection in [shared, claimer.blocking] { connection.onNewMaster { [reporter] s in reporter.replayLost(on: s) } }
        self.secrets = TaskSecrets(environment: config.environment, workerName: config.name)
        self.connections = secrets.ownConnections
        self.masker = SecretMasker(connections: connections)
    }

    /// Each flow's content hash. Hashing encodes each definition — 17 MiB of short-lived heap
    /// for the bench's 10,000-task flow — and the freed heap is given back, or an idle worker
    /// keeps it resident.
    static func contentHashes(_ flows: [Flow]) -> [String: String] {
        let out = Dictionary(flows.compactMap { f in (try? FlowDefinition(f).contentHash()).map { (f.id, $0) } }, uniquingKeysWith: { a, _ in a })
        releaseFreeHeapMemory()
        return out
    }

    var info: JSONValue {
        ["host": .string(config.hostname), "pid": .int(Int(ProcessInfo.processInfo.processIdentifier)),
         "queues": .array(config.queues.map(JSONValue.string)), "concurrency": .int(config.concurrency),
         "version": .string(config.version)]
    }

    /// `info` and the flow versions this worker carries: what it says when it comes online, so
    /// that the schedulers know which workers can run which version.
    var onlineInfo: JSONValue {
        var i = info.objectValue ?? [:]
        i["flows"] = .object(flowHashes.mapValues(JSONValue.string))
        if !importErrors.isEmpty { i["importErrors"] = .object(importErrors.mapValues(JSONValue.string)) }
        return .object(i)
    }

    /// Consumes until `shutdown()`; then lets running tasks finish within the grace period and
    /// gives back the messages of those that did not.
    public func run() async throws {
        // Redis may be starting (LOADING) or restarting: the worker waits for it, as it does
        // mid-run. Credentials Redis refuses will not get better: those stop the worker at once.
        let online = WorkerEvent(kind: .workerOnline, worker: config.name, at: clock.now(), info: onlineInfo)
        try await reporter.retry.retrying("announce worker \(config.name)", isFatal: { error in
            ["WRONGPASS", "NOAUTH", "invalid password", "invalid username-password"].contains(where: "\(error)".contains)
        }) { try await self.reporter.emit([online]) }
        logger.info("worker \(config.name) consuming \(config.queues.joined(separator: ",")) with concurrency \(config.concurrency)")
        // The heartbeat and the log shipper are child tasks: they live exactly as long as the
        // worker consumes and drains, and a cancelled worker cancels them.
        await withTaskGroup(of: Void.self) { g in
            g.addTask { await self.heartbeatLoop() }
            g.addTask { await self.logFlushLoop() }
            await consumeLoop()
            await drain()
            g.cancelAll()
        }
        try? await reporter.emit([WorkerEvent(kind: .workerOffline, worker: config.name, at: clock.now(), info: info)])
        logger.info("worker \(config.name) stopped")
    }

    /// Stops taking work (what `SIGTERM` does).
    public func shutdown() {
        state.stop()
        executor.wake()
    }

    // MARK: - Consuming

    func consumeLoop() async {
        var failures = 0
        while !state.stopping {
            let free = await executor.waitForSlots()
            if state.stopping { break }
            guard free > 0 else { continue }
            do {
                let claimed = await claimer.settle(try await claimer.claim(count: free))
                failures = 0
                for c in claimed { executor.inSlot { await self.handle(c.raw, cancelled: c.cancelled) } }
            } catch {
                failures += 1
                if failures == 1 || failures % 30 == 0 { logger.warning("consume: \(error)") }
                try? await Task.sleep(for: .milliseconds(min(2000, 50 * (1 << min(failures, 6)))))
            }
        }
    }

    // MARK: - One message

    func handle(_ raw: String, cancelled: Bool) async {
        let message: CeleryMessage
        do { message = try CeleryMessage.decode(raw) } catch {
            let tag = CeleryMessage.deliveryTag(of: raw) ?? ""
            await reporter.deadLetter(raw: raw, tag: tag, reason: "\(error)", celeryId: nil)
            return
        }
        if let inv = message.kwargs[FlowTaskInvocation.kwarg] {
            let invocation: FlowTaskInvocation
            do { invocation = try FlowTaskInvocation(json: inv) } catch {
                await reporter.deadLetter(raw: raw, tag: message.deliveryTag, reason: "task `\(message.task)`: its FlowKit invocation is malformed (\(error))",
                                 celeryId: nil)
                return
            }
            if let why = await unknownRun(message, invocation) {
                await reporter.deadLetter(raw: raw, tag: message.deliveryTag, reason: why, celeryId: nil)
                return
            }
            await runFlowTask(message, invocation, raw: raw, cancelled: cancelled)
        } else if message.task == "flowkit.echo" {
            let result: JSONValue = ["args": .array(message.args), "kwargs": .object(message.kwargs)]
            await reporter.finish(tag: message.deliveryTag, taskId: message.id, events: [], result: CeleryResult.success(taskId: message.id, result: result, name: message.task, worker: config.name))
        } else {
            await reporter.deadLetter(raw: raw, tag: message.deliveryTag, reason: "unknown task `\(message.task)`: this worker does not know it", celeryId: message.id,
                             task: message.task)
        }
    }

    /// Why a FlowKit message must not run, when its run is not one a scheduler dispatched. The
    /// claim script checks messages that name their run in a header; this covers the others.
    func unknownRun(_ message: CeleryMessage, _ inv: FlowTaskInvocation) async -> String? {
        if let header = message.extraHeaders[FlowKitKeys.runHeader] {
            guard header.stringValue == inv.runId else {
                return "task `\(message.task)`: its header names run `\(header.stringValue ?? "?")` but its invocation run `\(inv.runId)`"
            }
            return nil  // the claim script found the run's key
        }
        let check = FlowKitKeys.runExistsCommand(inv.runId)
        guard let exists = try? await redis.run({ s in try s.command(check).orThrow().int }) else { return nil }
        return exists == 1 ? nil : "task `\(message.task)` of unknown run `\(inv.runId)`: no scheduler of this Redis dispatched it"
    }

    func runFlowTask(_ message: CeleryMessage, _ inv: FlowTaskInvocation, raw: String, cancelled: Bool) async {
        let base = WorkerEvent(kind: .started, worker: config.name, at: clock.now(), messageId: message.id, runId: inv.runId,
                               taskId: inv.taskId, tryNumber: inv.tryNumber)
        var masker = self.masker
        // Every text of a try that leaves this worker (its error, a sensor's or skip's reason, a
        // timeout, the result's strings) is masked here, at the one place outcomes are built.
        func event(_ kind: WorkerEvent.Kind, result: JSONValue? = nil, error: String? = nil) -> WorkerEvent {
            var e = base; e.kind = kind; e.at = clock.now().timeIntervalSince1970
            e.result = result.map(masker.mask); e.error = error.map(masker.mask); return e
        }
        // A run cancelled before its message was picked up (the claim script looked).
        if cancelled {
            await reporter.finish(tag: message.deliveryTag, taskId: message.id, events: [event(.cancelled)], result: nil)
            return
        }
        // A message of another version of the flow than this worker's (a rolling upgrade, or a
        // worker built from other code): not run here, and no try counted.
        if let want = inv.flowHash, flowHashes[inv.flowId] != want {
            await handBack(message, inv, want: want)
            return
        }
        guard let task = tasks[message.task] else {
            // Not run, and kept on the dead-letter list for whoever deploys the flows; the try
            // fails so that its retries (perhaps on a worker that has the flow) go on.
            let error = importErrors[inv.flowId].map { "flow `\(inv.flowId)` could not be loaded on worker `\(config.name)`: \($0)" }
                ?? "worker `\(config.name)` does not know task `\(inv.taskId)` of flow `\(inv.flowId)`: is it built with that flow?"
            await reporter.deadLetter(raw: raw, tag: message.deliveryTag, reason: error, celeryId: nil, acknowledge: false)
            await reporter.finish(tag: message.deliveryTag, taskId: message.id, events: [event(.failed, error: error)],
                         result: CeleryResult.failure(taskId: message.id, errorType: "NotRegistered", message: error, name: message.task))
            return
        }
        let entry = executor.inFlight.add(messageId: message.id, deliveryTag: message.deliveryTag, runId: inv.runId, taskId: inv.taskId, tryNumber: inv.tryNumber)
        defer { executor.inFlight.remove(message.id) }
        // A try that ends within `startedReportDelay` reports its start inside its outcome: one
        // event and one scheduler transaction instead of two. Longer tries report it separately.
        let startedEvent = event(.started)
        let startedAt = clock.now()
        let reportStart = Task {
            try await Task.sleep(for: .milliseconds(Int(Self.startedReportDelay * 1000)))
            if entry.claimStartReport() { try await reporter.emit([startedEvent]) }
        }

        let (ctx, unresolved) = context(message, inv, entry: entry)
        if let own = entry.masker { masker = own }
        let outcome = if let unresolved { Executor.Outcome.failure(unresolved) } else { await executor.execute(task, ctx, timeout: inv.timeoutSeconds, entry: entry) }
        let startAlreadyReported = !entry.claimStartReport()
        reportStart.cancel()
        if entry.givenBack { return }  // shutdown handed the message back; another worker runs it
        var (final, celery) = Self.outcomeEvents(outcome, message: message, worker: config.name, entry: entry, event: event)
        if !startAlreadyReported { final.startedAt = startedAt.timeIntervalSince1970 }
        await reporter.finish(tag: message.deliveryTag, taskId: message.id,
                              events: entry.drainLogEvents(base: base, masker: masker, at: clock.now().timeIntervalSince1970) + [final], result: celery,
                              raw: raw)
    }

    /// The try's context: its run's dates and params, its upstream results, and the connections
    /// and variables it may use — from the store only for a task that declares some (or whose
    /// message carries some). A value it needs and cannot have is returned as why it cannot run.
    func context(_ message: CeleryMessage, _ inv: FlowTaskInvocation, entry: InFlightEntry) -> (TaskContext, unresolved: String?) {
        var ctx = TaskContext(flowId: inv.flowId, runId: inv.runId, taskId: inv.taskId, tryNumber: inv.tryNumber,
                              logicalDate: Date(timeIntervalSince1970: inv.logicalDate),
                              dataIntervalStart: Date(timeIntervalSince1970: inv.dataIntervalStart),
                              dataIntervalEnd: Date(timeIntervalSince1970: inv.dataIntervalEnd),
                              params: inv.params, upstream: inv.upstream, connections: connections,
                              log: TaskLogger { line in entry.log(line) }, commandRunner: SubprocessCommandRunner(),
                              mapIndex: inv.mapIndex, mapItem: inv.mapIndex == nil ? nil : (inv.mapItem ?? .null),
                              isCancelled: { entry.isCancelled })
        // Connections and variables from the store: only for a task that declares some (or whose
        // message carries some); a missing one fails the try before its body runs.
        var unresolved: String?
        if let needs = storeNeeds[message.task] ?? (inv.secrets == nil ? nil : ([], [])) {
            do {
                let got = try secrets.resolve(carried: inv.secrets, connections: needs.connections, variables: needs.variables)
                ctx.connections = got.connections
                ctx.variables = got.variables
                if inv.secrets != nil {
                    entry.masker = SecretMasker(connections: got.connections.merging(got.variables.filter { TaskNeeds.isSensitiveVariable($0.key) }) { a, _ in a })
                }
            } catch {
                unresolved = "\(error)"
            }
        }
        ctx.sqlRunner = PGSQLRunner()
        ctx.resultLoader = RedisResultLoader(redis: redis, flow: flowsById[inv.flowId])
        ctx.externalRun = inv.externalRun
        ctx.triggeringEvents = inv.triggeringEvents
        return (ctx, unresolved)
    }

    /// The outcome's event and its Celery result.
    static func outcomeEvents(_ outcome: Executor.Outcome, message: CeleryMessage, worker: String, entry: InFlightEntry,
                              event: (WorkerEvent.Kind, JSONValue?, String?) -> WorkerEvent) -> (WorkerEvent, String) {
        switch outcome {
        case .success(let value):
            let final = event(.succeeded, value, nil)
            return (final, CeleryResult.success(taskId: message.id, result: final.result, name: message.task, worker: worker))
        case .skipped(let reason):
            return (event(.skipped, nil, reason), CeleryResult.success(taskId: message.id, result: nil, name: message.task, worker: worker))
        case .notReady(let reason):
            entry.log("poke: not yet — \(reason)")
            return (event(.rescheduled, nil, reason), CeleryResult.success(taskId: message.id, result: nil, name: message.task, worker: worker))
        case .failure(let error):
            entry.log("task failed: \(error)")
            let final = event(.failed, nil, error)
            return (final, CeleryResult.failure(taskId: message.id, errorType: "TaskError", message: final.error ?? "", name: message.task, worker: worker))
        }
    }

    /// Gives a message this worker must not run back to its queue (the claimer waits longer
    /// the more times it came back), and says so in the try's log the first time. The
    /// scheduler flags a run whose version no live worker has (`VersionWatch`).
    func handBack(_ message: CeleryMessage, _ inv: FlowTaskInvocation, want: String) async {
        let have = flowHashes[inv.flowId]
        let needs = "version \(inv.flowVersion.map(String.init) ?? "?") of flow `\(inv.flowId)` (\(want.prefix(12)))"
        let why: String
        if let have {
            why = "worker `\(config.name)` carries another version of flow `\(inv.flowId)` (\(have.prefix(12)))"
        } else if let importError = importErrors[inv.flowId] {
            why = "flow `\(inv.flowId)` could not be loaded on worker `\(config.name)`: \(importError)"
        } else {
            why = "worker `\(config.name)` does not carry flow `\(inv.flowId)`"
        }
        let reason = "\(why); the run needs \(needs): handed back for a worker that has it (not counted as a try)"
        let line = WorkerEvent(kind: .log, worker: config.name, at: clock.now(), messageId: message.id, runId: inv.runId,
                               taskId: inv.taskId, tryNumber: inv.tryNumber)
        await claimer.handBack(messageId: message.id, tag: message.deliveryTag) { times in
            guard times == 1 || times % 100 == 0 else { return }
            self.logger.warning("\(inv.runId) \(inv.taskId): \(reason)")
            var l = line
            l.lines = [times == 1 ? reason : "\(reason) — \(times) times so far"]
            try? await self.reporter.emit([l])
        }
    }

    /// How long a try runs before its start is reported on its own.
    static let startedReportDelay = 0.02

    // MARK: - Heartbeat and logs

    func heartbeatLoop() async {
        while !Task.isCancelled {
            await heartbeatOnce()
            try? await Task.sleep(for: .milliseconds(Int(config.heartbeatInterval * 1000)))
        }
    }

    func heartbeatOnce() async {
        await reporter.replayIfPending()
        let running = executor.inFlight.all
        let cancelled = await reporter.heartbeat(info: info, running: running,
                                                 visibility: claimer.visibilityCommands(running: running.map(\.deliveryTag)))
        if !cancelled.isEmpty { executor.cancel(messageIds: cancelled) }
    }

    /// Ships buffered log lines of running tasks twice a second.
    func logFlushLoop() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(500))
            await reporter.shipLogs(executor.inFlight.all, masker: masker)
        }
    }

    /// Waits up to the grace period for running tasks, then gives their messages back.
    func drain() async {
        let deadline = ContinuousClock.now.advanced(by: .milliseconds(Int64(config.shutdownGrace * 1000)))
        // Every claimed message's handling ends, not only the running tasks: a message this
        // worker is handing back (another flow version's) is noted as waiting only once its
        // handling gets there, and one not noted yet would stay claimed until the visibility
        // timeout after this process exits.
        while executor.busy, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
        let left = executor.abandonAll()
        let handingBack = claimer.takePendingHandBacks()
        guard !left.isEmpty || !handingBack.isEmpty else { return }
        if !left.isEmpty { logger.warning("giving back \(left.count) unfinished tasks after the \(config.shutdownGrace)s grace period") }
        await claimer.giveBack(left.map(\.deliveryTag) + handingBack)
    }
}

/// Whether the worker was told to stop.
final class WorkerState: @unchecked Sendable {
    private let lock = NSLock()
    private var stopped = false
    var stopping: Bool { lock.withLock { stopped } }
    func stop() { lock.withLock { stopped = true } }
}
