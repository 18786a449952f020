import CeleryProtocol
import FlowKit
import Foundation
import Logging
import RedisClient
import Synchronization

/// The worker's completer: reports outcomes (events, the Celery result and the acknowledgement
/// in one MULTI), dead-letters what cannot run, heart-beats — which also keeps the claims
/// visible and finds cancelled tries — and ships running tries' log lines.
final class Reporter: Sendable {
    let worker: String
    let redis: RedisConnection
    let clock: any WallClock
    let logger: Logger
    let retry: Retry
    let heartbeatInterval: Double

    init(config: WorkerConfig, redis: RedisConnection, logger: Logger, retry: Retry, keepAllReports: Bool = false) {
        self.worker = config.name
        self.queueLists = config.queues.flatMap { KombuLayout.lists(for: $0) }
        self.keepsReports = redis.config.masterName != nil || keepAllReports
        self.redis = redis
        self.clock = config.clock
        self.logger = logger
        self.retry = retry
        self.heartbeatInterval = config.heartbeatInterval
    }

    var nowSeconds: Double { clock.now().timeIntervalSince1970 }

    // MARK: - Outcomes

    /// Reports events, stores the Celery result and acknowledges the message in one MULTI, so
    /// a message is never acknowledged without its outcome. Retries while Redis is away. With
    /// the message's `raw` text, the report is kept a few seconds for `replayLost`.
    func finish(tag: String, taskId: String, events: [WorkerEvent], result: String?, raw: String? = nil) async {
        var cmds: [[String]] = [["MULTI"]]
        cmds += events.map { $0.xaddCommand() }
        if let result { cmds += CeleryResult.commands(taskId: taskId, meta: result) }
        // The outcome's result, for tasks further downstream that read it lazily.
        if let last = events.last, last.kind == .succeeded || last.kind == .skipped, let run = last.runId, let task = last.taskId {
            cmds.append(FlowKitKeys.storeResultCommand(runId: run, taskId: task, json: (last.result ?? .null).compactJSON))
        }
        cmds += KombuLayout.ackCommands(deliveryTag: tag)
        cmds.append(["EXEC"])
        let keep = keepsReports && raw != nil && !events.isEmpty
        await retry.reliably("report \(tag)") { [cmds] in
            let entryId = try await self.redis.run { s -> String? in
                let replies = try s.pipeline(cmds)
                if case .error(let m) = replies.last ?? .null { throw RedisError(.reply, m) }
                return keep ? SentReports.entryId(exec: replies.last, at: events.count - 1) : nil
            }
            if let entryId, let raw { self.sent.record(entryId: entryId, entryIndex: events.count - 1, commands: cmds, raw: raw) }
        }
    }

    // MARK: - After a Redis failover

    /// Reports sent in the last few seconds. Redis replicates asynchronously: a report the old
    /// master acknowledged just before it died may be missing on the promoted replica, which then
    /// still holds the message — queued, or claimed and soon restored — and would run a finished
    /// try a second time.
    let sent = SentReports()
    private let replaying = NSLock()
    /// The worker's queues' lists, where a lost report's message may wait again.
    let queueLists: [String]
    /// Only a Redis behind Sentinel fails over: with a single server nothing is kept.
    let keepsReports: Bool

    /// Sends again, on the new master's session `s`, every kept report the new master lacks
    /// (its events, result and acknowledgement in one MULTI, as before), and takes its message
    /// off the worker's queues and out of `unacked` — where another worker may have just
    /// claimed it: that worker checks its claims before running them (`Claimer.settle`).
    /// Runs on the connection's thread, before anything else uses the new master.
    func replayLost(on s: RedisSession) {
        // The worker's connections find the new master at about the same moment: one replay at
        // a time, so that the second finds the first's reports there and sends nothing twice.
        replaying.lock()
        defer { replaying.unlock() }
        let reports = sent.all
        guard !reports.isEmpty else { return }
        do {
            var lost: [SentReports.Report] = []
            for chunk in stride(from: 0, to: reports.count, by: 1000).map({ reports[$0..<min($0 + 1000, reports.count)] }) {
                let reply = try s.command(KombuLayout.missingEntriesCommand(stream: FlowKitKeys.events, ids: chunk.map(\.entryId))).orThrow()
                lost += (reply.array ?? []).compactMap(\.int).map { chunk[chunk.startIndex + $0 - 1] }
            }
            var cmds: [[String]] = []
            for r in lost { cmds += r.commands + queueLists.map { ["LREM", $0, "0", r.raw] } }
            if !cmds.isEmpty {
                // Each report's stream entry has a new id now: a later look must find it.
                let replies = try s.pipeline(cmds)
                var at = 0, moved: [String: String] = [:]
                for r in lost {
                    at += r.commands.count
                    if let id = SentReports.entryId(exec: replies[at - 1], at: r.entryIndex) { moved[r.entryId] = id }
                    at += queueLists.count
                }
                sent.renumber(moved)
            }
            logger.warning("the Redis master moved: \(lost.count) of the \(reports.count) reports sent in the last \(Int(SentReports.keep)) s were lost with the old master and are sent again")
            sent.replayed(pending: false)
        } catch {
            logger.warning("the Redis master moved: could not look for reports lost with the old master (\(error)); trying again at the next heartbeat")
            sent.replayed(pending: true)
        }
    }

    /// A replay that failed on its connection, tried again (at a heartbeat).
    func replayIfPending() async {
        guard sent.pending else { return }
        try? await redis.run { s in self.replayLost(on: s) }
    }

    /// Puts a message on the dead-letter list with why, stores a Celery failure for a Celery
    /// id, and acknowledges it (when it has a delivery tag).
    func deadLetter(raw: String, tag: String, reason: String, celeryId: String?, task: String? = nil, acknowledge: Bool = true) async {
        logger.warning("dead-lettered a message: \(reason)")
        var cmds: [[String]] = [["MULTI"]]
        cmds += DeadLetter.commands(["reason": .string(reason), "worker": .string(worker), "at": .double(nowSeconds)],
                                    payloadKey: "message", payload: raw)
        if let celeryId {
            cmds += CeleryResult.commands(taskId: celeryId, meta: CeleryResult.failure(taskId: celeryId, errorType: "NotRegistered", message: reason, name: task))
        }
        if acknowledge && !tag.isEmpty { cmds += KombuLayout.ackCommands(deliveryTag: tag) }
        cmds.append(["EXEC"])
        await retry.reliably("dead-letter") { [cmds] in try await self.redis.run { s in _ = try s.pipeline(cmds) } }
    }

    func emit(_ events: [WorkerEvent]) async throws {
        let cmds = events.map { $0.xaddCommand() }
        try await redis.run { s in for r in try s.pipeline(cmds) { try r.orThrow() } }
    }

    // MARK: - Heartbeat and logs

    /// One heartbeat: the worker's liveness key and entry, its heartbeat event, the claims'
    /// visibility (`visibility`, from the claimer, whose last command is the restore) and a
    /// look at the cancel keys of `running`. Returns the message ids whose run was cancelled.
    func heartbeat(info: JSONValue, running: [InFlightEntry], visibility: [[String]]) async -> Set<String> {
        var cmds = FlowKitKeys.aliveCommands(worker: worker, ttl: Int(heartbeatInterval * 3), info: info.compactJSON)
        cmds.append(WorkerEvent(kind: .heartbeat, worker: worker, at: clock.now(), running: running.map(\.messageId), info: info).xaddCommand())
        cmds += visibility
        cmds += running.map { FlowKitKeys.cancelCheckCommand($0.messageId) }
        let c = cmds
        do {
            let replies = try await redis.run { s in try s.pipeline(c) }
            var cancelled = Set<String>()
            for (e, r) in zip(running, replies.suffix(running.count)) where r.int == 1 {
                logger.info("cancelling \(e.taskId) of \(e.runId): the run was cancelled")
                cancelled.insert(e.messageId)
            }
            return cancelled
        } catch {
            logger.warning("heartbeat: \(error)")
            return []
        }
    }

    /// Ships the buffered log lines of `running` (one pipeline for all of them).
    func shipLogs(_ running: [InFlightEntry], masker: SecretMasker) async {
        let events = running.flatMap { e in
            e.drainLogEvents(base: WorkerEvent(kind: .log, worker: worker, messageId: e.messageId, runId: e.runId,
                                               taskId: e.taskId, tryNumber: e.tryNumber), masker: e.masker ?? masker, at: nowSeconds)
        }
        if !events.isEmpty { await retry.reliably("ship logs") { try await self.emit(events) } }
    }
}

/// Trying a Redis call again while Redis is away, saying so now and then.
struct Retry: Sendable {
    let logger: Logger

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
}

/// The reports a worker sent in the last `keep` seconds (see `Reporter.sent`). Appending is a
/// lock and an append; entries past `keep` go once they are a batch. While Redis is away nothing
/// is sent and nothing ages out: what was sent just before the outage is still here after it.
final class SentReports: Sendable {
    struct Report: Sendable {
        let at: ContinuousClock.Instant
        var entryId: String
        /// Where the report's last event is among the replies of its EXEC.
        let entryIndex: Int
        let commands: [[String]]
        let raw: String
    }
    /// Longer than a replica lags behind under load (WAIT measured over a second in `make faults`),
    /// and longer than an old master takes writes after a `SENTINEL FAILOVER`: the sentinels
    /// demote it — and clients find the new master — only at their next look at it (every 10 s).
    static let keep = 20.0

    /// The stream id a report's event got, from its EXEC's reply: the events' XADD replies come
    /// first, in order, so the report's last event is at `index`.
    static func entryId(exec: RedisValue?, at index: Int) -> String? {
        exec?.array?.dropFirst(index).first?.string
    }
    private let state = Mutex<(reports: [Report], head: Int, pending: Bool)>(([], 0, false))

    func record(entryId: String, entryIndex: Int, commands: [[String]], raw: String) {
        let now = ContinuousClock.now
        state.withLock { st in
            st.reports.append(Report(at: now, entryId: entryId, entryIndex: entryIndex, commands: commands, raw: raw))
            while st.head < st.reports.count, now - st.reports[st.head].at > .seconds(Self.keep) { st.head += 1 }
            if st.head >= 1024, st.head * 2 >= st.reports.count { st.reports.removeFirst(st.head); st.head = 0 }
        }
    }

    var all: [Report] { state.withLock { Array($0.reports[$0.head...]) } }
    /// Reports sent again: their entries' new ids.
    func renumber(_ moved: [String: String]) {
        guard !moved.isEmpty else { return }
        state.withLock { st in
            for i in st.head..<st.reports.count { if let id = moved[st.reports[i].entryId] { st.reports[i].entryId = id } }
        }
    }
    var pending: Bool { state.withLock { $0.pending } }
    func replayed(pending: Bool) { state.withLock { $0.pending = pending } }
}
