import CeleryProtocol
import FlowKit
import Foundation
import Logging
import RedisClient

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

    init(config: WorkerConfig, redis: RedisConnection, logger: Logger, retry: Retry) {
        self.worker = config.name
        self.redis = redis
        self.clock = config.clock
        self.logger = logger
        self.retry = retry
        self.heartbeatInterval = config.heartbeatInterval
    }

    var nowSeconds: Double { clock.now().timeIntervalSince1970 }

    // MARK: - Outcomes

    /// Reports events, stores the Celery result and acknowledges the message in one MULTI, so
    /// a message is never acknowledged without its outcome. Retries while Redis is away.
    func finish(tag: String, taskId: String, events: [WorkerEvent], result: String?) async {
        var cmds: [[String]] = [["MULTI"]]
        cmds += events.map { $0.xaddCommand() }
        if let result { cmds += CeleryResult.commands(taskId: taskId, meta: result) }
        // The outcome's result, for tasks further downstream that read it lazily.
        if let last = events.last, last.kind == .succeeded || last.kind == .skipped, let run = last.runId, let task = last.taskId {
            cmds.append(FlowKitKeys.storeResultCommand(runId: run, taskId: task, json: (last.result ?? .null).compactJSON))
        }
        cmds += KombuLayout.ackCommands(deliveryTag: tag)
        cmds.append(["EXEC"])
        await retry.reliably("report \(tag)") { [cmds] in
            try await self.redis.run { s in
                let replies = try s.pipeline(cmds)
                if case .error(let m) = replies.last ?? .null { throw RedisError(.reply, m) }
            }
        }
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
