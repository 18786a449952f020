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
/// ```swift
/// let worker = Worker(redis: try RedisConfig(url: url), flows: allFlows, config: WorkerConfig(queues: ["default"]))
/// try await worker.run()   // until worker.shutdown()
/// ```
public final class Worker: Sendable {
    public let config: WorkerConfig
    let redis: RedisConnection
    let blocking: RedisConnection
    /// The tasks this worker can run, by Celery task name (`flow.task`).
    let tasks: [String: FlowTask]
    /// The direct downstream task ids of each branch task, by Celery task name: what it may choose.
    let branchTargets: [String: [String]]
    let slots: SlotGate
    let inFlight = InFlight()
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
        self.redis = RedisConnection(redis, label: "worker-redis")
        self.blocking = RedisConnection(redis, label: "worker-blocking", readTimeout: 10)
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
        self.storeNeeds = t.compactMapValues { task in
            let c = task.neededConnections, v = task.neededVariables
            return c.isEmpty && v.isEmpty ? nil : (c, v)
        }
        self.branchTargets = targets
        self.flowsById = Dictionary(flows.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        self.flowHashes = Self.contentHashes(flows)
        self.slots = SlotGate(config.concurrency)
        var l = Logger(label: "flowkit.worker")
        l[metadataKey: "worker"] = "\(config.name)"
        self.logger = l
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
        let online = WorkerEvent(kind: .workerOnline, worker: config.name, info: onlineInfo)
        try await retrying("announce worker \(config.name)", isFatal: { error in
            ["WRONGPASS", "NOAUTH", "invalid password", "invalid username-password"].contains(where: "\(error)".contains)
        }) { try await self.emit([online]) }
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
        try? await emit([WorkerEvent(kind: .workerOffline, worker: config.name, info: info)])
        logger.info("worker \(config.name) stopped")
    }

    /// Stops taking work (what `SIGTERM` does).
    public func shutdown() {
        state.stop()
        slots.wakeAll()
    }

    // MARK: - Consuming

    func consumeLoop() async {
        var failures = 0
        var queueIndex = 0
        // Claims whose reply never arrived (a timeout, a dropped connection): what they took is
        // taken back at the next chance, not left claimed until the visibility timeout.
        var unanswered: [String] = []
        while !state.stopping {
            await slots.waitForFree()
            if state.stopping { break }
            let free = slots.freeCount
            guard free > 0 else { continue }
            let claimKeys = [FlowKitKeys.claim(UUID().uuidString), FlowKitKeys.claim(UUID().uuidString)]
            do {
                if !unanswered.isEmpty {
                    let keys = unanswered
                    let recovered = try await redis.run { s in
                        try keys.flatMap { KombuLayout.recovered(try s.command(KombuLayout.recoverCommand(claimKey: $0)).orThrow()) }
                    }
                    unanswered = []
                    if !recovered.isEmpty { logger.warning("took back \(recovered.count) messages claimed by a call whose reply was lost") }
                    for c in recovered {
                        slots.take()
                        Task { await self.handle(c.raw, cancelled: c.cancelled); self.slots.release() }
                    }
                    continue
                }
                let queues = config.queues
                let maxBytes = config.maxMessageBytes
                let command = KombuLayout.claimCommand(queues: queues, count: free, now: Date().timeIntervalSince1970, maxMessageBytes: maxBytes,
                                                       claimKey: claimKeys[0])
                // On the consume loop's own connection: a claim must not hold up a finished
                // try's report, which goes out on the shared one.
                var reply = try await blocking.run { s in KombuLayout.claimed(try s.command(command).orThrow()) }
                failures = 0
                if reply.messages.isEmpty {
                    // Wait for the next message without taking it: BLMOVE of a list onto itself,
                    // left to left, leaves the list as it was. When one arrives, claim at once on
                    // the same connection and thread: no hop between the wake-up and the claim.
                    let q = queues[queueIndex % queues.count]
                    queueIndex += 1
                    let timeout = String(format: "%.2f", max(0.05, 1.0 / Double(queues.count)))
                    reply = try await blocking.run { s in
                        // BLMOVE hands over the element it moved: an oversized one reaches this
                        // process once, here, and is dropped at once (the claim refuses it).
                        let woke = try s.command(["BLMOVE", q, q, "LEFT", "LEFT", timeout]).orThrow()
                        guard woke != .null else { return KombuLayout.ClaimReply(messages: [], rejected: []) }
                        if (woke.string?.utf8.count ?? 0) > maxBytes { releaseFreeHeapMemory() }
                        let now = Date().timeIntervalSince1970
                        return KombuLayout.claimed(try s.command(KombuLayout.claimCommand(queues: queues, count: free, now: now,
                                                                                          maxMessageBytes: maxBytes, claimKey: claimKeys[1])).orThrow())
                    }
                }
                for why in reply.rejected { logger.warning("dead-lettered a message at the claim: \(why)") }
                if reply.rejected.contains(where: { $0.contains(" bytes is over the limit") }) { releaseFreeHeapMemory() }
                for c in reply.messages {
                    slots.take()
                    Task { await self.handle(c.raw, cancelled: c.cancelled); self.slots.release() }
                }
            } catch {
                if unanswered.count < 100 { unanswered += claimKeys }  // either claim may have run
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
            await deadLetter(raw: raw, tag: tag, reason: "\(error)", celeryId: nil)
            return
        }
        if let inv = message.kwargs[FlowTaskInvocation.kwarg] {
            let invocation: FlowTaskInvocation
            do { invocation = try FlowTaskInvocation(json: inv) } catch {
                await deadLetter(raw: raw, tag: message.deliveryTag, reason: "task `\(message.task)`: its FlowKit invocation is malformed (\(error))",
                                 celeryId: nil)
                return
            }
            if let why = await unknownRun(message, invocation) {
                await deadLetter(raw: raw, tag: message.deliveryTag, reason: why, celeryId: nil)
                return
            }
            await runFlowTask(message, invocation, raw: raw, cancelled: cancelled)
        } else if message.task == "flowkit.echo" {
            let result: JSONValue = ["args": .array(message.args), "kwargs": .object(message.kwargs)]
            await finish(tag: message.deliveryTag, taskId: message.id, events: [], result: CeleryResult.success(taskId: message.id, result: result, name: message.task, worker: config.name))
        } else {
            await deadLetter(raw: raw, tag: message.deliveryTag, reason: "unknown task `\(message.task)`: this worker does not know it", celeryId: message.id,
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
        let key = FlowKitKeys.run(inv.runId)
        guard let exists = try? await redis.run({ s in try s.command(["EXISTS", key]).orThrow().int }) else { return nil }
        return exists == 1 ? nil : "task `\(message.task)` of unknown run `\(inv.runId)`: no scheduler of this Redis dispatched it"
    }

    func runFlowTask(_ message: CeleryMessage, _ inv: FlowTaskInvocation, raw: String, cancelled: Bool) async {
        let base = WorkerEvent(kind: .started, worker: config.name, messageId: message.id, runId: inv.runId,
                               taskId: inv.taskId, tryNumber: inv.tryNumber)
        var masker = self.masker
        // Every text of a try that leaves this worker (its error, a sensor's or skip's reason, a
        // timeout, the result's strings) is masked here, at the one place outcomes are built.
        func event(_ kind: WorkerEvent.Kind, result: JSONValue? = nil, error: String? = nil) -> WorkerEvent {
            var e = base; e.kind = kind; e.at = Date().timeIntervalSince1970
            e.result = result.map(masker.mask); e.error = error.map(masker.mask); return e
        }
        // A run cancelled before its message was picked up (the claim script looked).
        if cancelled {
            await finish(tag: message.deliveryTag, taskId: message.id, events: [event(.cancelled)], result: nil)
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
            logger.warning("dead-lettered a message: \(error)")
            await reliably("dead-letter") { [raw] in
                try await self.redis.run { s in _ = try s.pipeline(DeadLetter.commands(
                    ["reason": .string(error), "worker": .string(self.config.name), "at": .double(Date().timeIntervalSince1970)],
                    payloadKey: "message", payload: raw)) }
            }
            await finish(tag: message.deliveryTag, taskId: message.id, events: [event(.failed, error: error)],
                         result: CeleryResult.failure(taskId: message.id, errorType: "NotRegistered", message: error, name: message.task))
            return
        }
        let entry = inFlight.add(messageId: message.id, deliveryTag: message.deliveryTag, runId: inv.runId, taskId: inv.taskId, tryNumber: inv.tryNumber)
        defer { inFlight.remove(message.id) }
        // A try that ends within `startedReportDelay` reports its start inside its outcome: one
        // event and one scheduler transaction instead of two. Longer tries report it separately.
        let startedEvent = event(.started)
        let startedAt = Date()
        let reportStart = Task {
            try await Task.sleep(for: .milliseconds(Int(Self.startedReportDelay * 1000)))
            if entry.claimStartReport() { try await emit([startedEvent]) }
        }

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
                    masker = SecretMasker(connections: got.connections.merging(got.variables.filter { TaskNeeds.isSensitiveVariable($0.key) }) { a, _ in a })
                    entry.masker = masker
                }
            } catch {
                unresolved = "\(error)"
            }
        }
        ctx.sqlRunner = PGSQLRunner()
        ctx.resultLoader = RedisResultLoader(redis: redis, flow: flowsById[inv.flowId])
        ctx.externalRun = inv.externalRun
        ctx.triggeringEvents = inv.triggeringEvents
        let outcome = if let unresolved { Outcome.failure(unresolved) } else { await execute(task, ctx, timeout: inv.timeoutSeconds, entry: entry) }
        let startAlreadyReported = !entry.claimStartReport()
        reportStart.cancel()
        if entry.givenBack { return }  // shutdown handed the message back; another worker runs it
        var final: WorkerEvent
        var celery: String
        switch outcome {
        case .success(let value):
            final = event(.succeeded, result: value)
            celery = CeleryResult.success(taskId: message.id, result: final.result, name: message.task, worker: config.name)
        case .skipped(let reason):
            final = event(.skipped, error: reason)
            celery = CeleryResult.success(taskId: message.id, result: nil, name: message.task, worker: config.name)
        case .notReady(let reason):
            entry.log("poke: not yet — \(reason)")
            final = event(.rescheduled, error: reason)
            celery = CeleryResult.success(taskId: message.id, result: nil, name: message.task, worker: config.name)
        case .failure(let error):
            entry.log("task failed: \(error)")
            final = event(.failed, error: error)
            celery = CeleryResult.failure(taskId: message.id, errorType: "TaskError", message: final.error ?? "", name: message.task, worker: config.name)
        }
        if !startAlreadyReported { final.startedAt = startedAt.timeIntervalSince1970 }
        await finish(tag: message.deliveryTag, taskId: message.id, events: entry.drainLogEvents(base: base, masker: masker) + [final], result: celery)
    }

    /// Gives a message this worker must not run back to its queue, after a wait that grows with
    /// the times it came back (so that a fleet without its version does not spin on it), and
    /// says so in the try's log the first time. The scheduler flags a run whose version no
    /// live worker has (`VersionWatch`).
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
        let key = FlowKitKeys.handBacks(message.id)
        let times = (try? await redis.run { s in try s.pipeline([["INCR", key], ["EXPIRE", key, "86400"]]).first?.int }) ?? 1
        if times == 1 || times % 100 == 0 {
            logger.warning("\(inv.runId) \(inv.taskId): \(reason)")
            var line = WorkerEvent(kind: .log, worker: config.name, messageId: message.id, runId: inv.runId, taskId: inv.taskId, tryNumber: inv.tryNumber)
            line.lines = [times == 1 ? reason : "\(reason) — \(times) times so far"]
            try? await emit([line])
        }
        // Well inside the visibility timeout: a claim restored by the leader and claimed again
        // meanwhile must not be taken back from its new worker (the heartbeat refreshes it too).
        let delay = min(5.0, config.visibilityTimeout / 4, 0.1 * Double(1 << min(times - 1, 6)))
        let tag = message.deliveryTag
        // The slot is free while the message waits, so that the worker goes on with what it can
        // run — up to `maxPendingHandBacks` waiting; past that a hand-back keeps its slot, and the
        // worker claims no faster than it gives back.
        let crowded = state.handingBack(tag) > Self.maxPendingHandBacks
        let giveBackLater = Task {
            try? await Task.sleep(for: .milliseconds(Int(delay * 1000)))
            guard self.state.handedBack(tag) else { return }  // drain gave it back already
            await self.giveBack([tag], behindWaiting: true)
        }
        if crowded { await giveBackLater.value }
    }

    /// How many messages may wait to be handed back while their slots take other work.
    static let maxPendingHandBacks = 100

    /// Puts claimed messages back on their queues at once (their claims are scored 0, and the
    /// restore script moves every claim older than 1 back): next in line, or `behindWaiting`
    /// every message waiting, so that a message no worker here can run does not hold up others.
    func giveBack(_ tags: [String], behindWaiting: Bool = false) async {
        var cmds = tags.map { ["ZADD", KombuLayout.unackedIndex, "XX", "0", $0] }
        cmds.append(["EVAL", KombuLayout.restoreScript, "2", KombuLayout.unacked, KombuLayout.unackedIndex, "1", String(tags.count + 100)]
                    + (behindWaiting ? ["back"] : []))
        let c = cmds
        await reliably("give back") { try await self.redis.run { s in _ = try s.pipeline(c) } }
    }

    enum Outcome { case success(JSONValue?), skipped(String), notReady(String), failure(String) }

    /// How long a try runs before its start is reported on its own.
    static let startedReportDelay = 0.02

    func execute(_ task: FlowTask, _ ctx: TaskContext, timeout: Double?, entry: InFlightEntry) async -> Outcome {
        let targets = branchTargets[FlowTaskInvocation.taskName(flow: ctx.flowId, task: task.id)] ?? []
        let home = config.home
        let work = Task<JSONValue?, any Error> {
            try await TaskBodyRunner.run(task, ctx, timeout: timeout, home: home, branchTargets: targets)
        }
        entry.attach(work)
        let result: Result<JSONValue?, any Error> = await withCheckedContinuation { cont in
            let once = Once()
            Task {
                let r = await work.result
                if once.claim() { cont.resume(returning: r) }
            }
            if let timeout {
                Task {
                    try? await Task.sleep(for: .milliseconds(Int(timeout * 1000)))
                    if once.claim() {
                        entry.timedOut = true
                        work.cancel()
                        cont.resume(returning: .failure(TaskError("timed out after \(timeout)s (execution timeout)")))
                    }
                }
            }
        }
        switch result {
        case .success(let v):
            guard let v else { return .success(nil) }
            do { _ = try checkResultSize(v, task: task.id); return .success(v) } catch { return .failure("\(error)") }
        case .failure(let e as TaskSkipped): return .skipped(e.reason)
        case .failure(let e as SensorNotReady): return .notReady(e.reason)
        case .failure(let e) where e is CancellationError:
            return .failure(entry.timedOut ? "timed out" : entry.isCancelled ? "cancelled: the run was cancelled" : "cancelled")
        case .failure(let e): return .failure("\(e)")
        }
    }

    // MARK: - Reporting

    /// Reports events, stores the Celery result and acknowledges the message in one MULTI, so
    /// a message is never acknowledged without its outcome. Retries while Redis is away.
    func finish(tag: String, taskId: String, events: [WorkerEvent], result: String?) async {
        var cmds: [[String]] = [["MULTI"]]
        cmds += events.map { $0.xaddCommand() }
        if let result { cmds += CeleryResult.commands(taskId: taskId, meta: result) }
        // The outcome's result, for tasks further downstream that read it lazily.
        if let last = events.last, last.kind == .succeeded || last.kind == .skipped, let run = last.runId, let task = last.taskId {
            cmds.append(["SET", FlowKitKeys.result(run, task), (last.result ?? .null).compactJSON, "EX", String(FlowKitKeys.runKeySeconds)])
        }
        cmds += KombuLayout.ackCommands(deliveryTag: tag)
        cmds.append(["EXEC"])
        await reliably("report \(tag)") { [cmds] in
            try await self.redis.run { s in
                let replies = try s.pipeline(cmds)
                if case .error(let m) = replies.last ?? .null { throw RedisError(.reply, m) }
            }
        }
    }

    func deadLetter(raw: String, tag: String, reason: String, celeryId: String?, task: String? = nil) async {
        logger.warning("dead-lettered a message: \(reason)")
        var cmds: [[String]] = [["MULTI"]]
        cmds += DeadLetter.commands(["reason": .string(reason), "worker": .string(config.name), "at": .double(Date().timeIntervalSince1970)],
                                    payloadKey: "message", payload: raw)
        if let celeryId {
            cmds += CeleryResult.commands(taskId: celeryId, meta: CeleryResult.failure(taskId: celeryId, errorType: "NotRegistered", message: reason, name: task))
        }
        if !tag.isEmpty { cmds += KombuLayout.ackCommands(deliveryTag: tag) }
        cmds.append(["EXEC"])
        await reliably("dead-letter") { [cmds] in try await self.redis.run { s in _ = try s.pipeline(cmds) } }
    }

    func emit(_ events: [WorkerEvent]) async throws {
        let cmds = events.map { $0.xaddCommand() }
        try await redis.run { s in for r in try s.pipeline(cmds) { try r.orThrow() } }
    }

    func reliably(_ what: String, _ body: @escaping @Sendable () async throws -> Void) async {
        try? await retrying(what, body)
    }

    /// Runs `body` until it succeeds, waiting 40 ms growing to 1 s between attempts and saying so
    /// now and then; throws at once an error `isFatal` accepts, and the last one after 600 attempts.
    func retrying(_ what: String, isFatal: (any Error) -> Bool = { _ in false },
                  _ body: @escaping @Sendable () async throws -> Void) async throws {
        var attempt = 0
        while true {
            do { try await body(); return } catch {
                if isFatal(error) { throw error }
                attempt += 1
                if attempt == 1 || attempt % 20 == 0 { logger.warning("\(what): \(error); retrying") }
                if attempt > 600 { logger.error("\(what): giving up after \(attempt) attempts"); throw error }
                try? await Task.sleep(for: .milliseconds(min(1000, 20 * (1 << min(attempt, 6)))))
            }
        }
    }

    // MARK: - Heartbeat, cancellation, restore

    func heartbeatLoop() async {
        while !Task.isCancelled {
            await heartbeatOnce()
            try? await Task.sleep(for: .milliseconds(Int(config.heartbeatInterval * 1000)))
        }
    }

    /// Ships buffered log lines of running tasks twice a second (one pipeline for all of them).
    func logFlushLoop() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(500))
            let events = inFlight.all.flatMap { e in
                e.drainLogEvents(base: WorkerEvent(kind: .log, worker: config.name, messageId: e.messageId, runId: e.runId,
                                                   taskId: e.taskId, tryNumber: e.tryNumber), masker: e.masker ?? masker)
            }
            if !events.isEmpty { await reliably("ship logs") { try await self.emit(events) } }
        }
    }

    func heartbeatOnce() async {
        let entries = inFlight.all
        let now = Date()
        var cmds: [[String]] = [
            ["SET", FlowKitKeys.workerAlive(config.name), "1", "EX", String(max(1, Int(config.heartbeatInterval * 3)))],
            ["HSET", FlowKitKeys.workers, config.name, info.compactJSON],
        ]
        cmds += (entries.map(\.deliveryTag) + state.pendingHandBackTags).map { ["ZADD", KombuLayout.unackedIndex, "XX", String(now.timeIntervalSince1970), $0] }
        cmds.append(WorkerEvent(kind: .heartbeat, worker: config.name, running: entries.map(\.messageId), info: info).xaddCommand())
        cmds += entries.map { ["EXISTS", FlowKitKeys.cancel($0.messageId)] }
        cmds.append(["EVAL", KombuLayout.restoreScript, "2", KombuLayout.unacked, KombuLayout.unackedIndex,
                     String(now.timeIntervalSince1970 - config.visibilityTimeout), "100"])
        let c = cmds
        do {
            let replies = try await redis.run { s in try s.pipeline(c) }
            let cancelReplies = replies.dropLast().suffix(entries.count)
            for (e, r) in zip(entries, cancelReplies) where r.int == 1 {
                logger.info("cancelling \(e.taskId) of \(e.runId): the run was cancelled")
                e.cancel()
            }
        } catch {
            logger.warning("heartbeat: \(error)")
        }
    }

    /// Waits up to the grace period for running tasks, then gives their messages back.
    func drain() async {
        let deadline = Date().addingTimeInterval(config.shutdownGrace)
        // Every claimed message's handling ends, not only the running tasks: a message this
        // worker is handing back (another flow version's) is noted as waiting only once its
        // handling gets there, and one not noted yet would stay claimed until the visibility
        // timeout after this process exits.
        while !inFlight.all.isEmpty || slots.freeCount < config.concurrency, Date() < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
        let left = inFlight.all
        let handingBack = state.takeHandBacks()
        guard !left.isEmpty || !handingBack.isEmpty else { return }
        if !left.isEmpty { logger.warning("giving back \(left.count) unfinished tasks after the \(config.shutdownGrace)s grace period") }
        for e in left { e.giveBack() }
        await giveBack(left.map(\.deliveryTag) + handingBack)
    }
}

/// Resumes a continuation once, whichever side gets there first.
final class Once: @unchecked Sendable {
    private let lock = NSLock()
    private var done = false
    func claim() -> Bool { lock.withLock { if done { return false }; done = true; return true } }
}

final class WorkerState: @unchecked Sendable {
    private let lock = NSLock()
    private var stopped = false
    /// Delivery tags of messages waiting to be handed back.
    private var pendingHandBacks = Set<String>()
    var stopping: Bool { lock.withLock { stopped } }
    func stop() { lock.withLock { stopped = true } }
    /// Notes a message waiting to be handed back; returns how many wait.
    func handingBack(_ tag: String) -> Int { lock.withLock { pendingHandBacks.insert(tag); return pendingHandBacks.count } }
    /// Whether `tag` was still waiting (and is no longer).
    func handedBack(_ tag: String) -> Bool { lock.withLock { pendingHandBacks.remove(tag) != nil } }
    var pendingHandBackTags: [String] { lock.withLock { Array(pendingHandBacks) } }
    func takeHandBacks() -> [String] { lock.withLock { defer { pendingHandBacks = [] }; return Array(pendingHandBacks) } }
}
