import CeleryProtocol
import FlowKit
import Foundation
import Logging
import PostgresClient
import RedisClient

/// Tunables of a scheduler process.
public struct SchedulerConfig: Sendable {
    public var name: String
    /// A running task with no heartbeat for this long is a zombie.
    public var zombieThreshold: Double = 30
    /// A task queued this long is checked for a lost message.
    public var lostMessageAfter: Double = 30
    /// Claimed messages not acknowledged within this long are restored to their queue (kombu's
    /// visibility timeout; workers refresh their claims with every heartbeat).
    public var visibilityTimeout: Double = 300
    /// How often the leader's maintenance (reaper, restore, lost messages) runs.
    public var maintenanceInterval: Double = 2
    public var eventBatch: Int = 1000

    public init(name: String = "scheduler-\(ProcessInfo.processInfo.hostName)-\(ProcessInfo.processInfo.processIdentifier)") {
        self.name = name
    }
}

/// The scheduler: turns triggers, cron ticks and worker events into task messages.
///
/// Its duties run side by side: the run starter (woken by `NOTIFY flowkit_runs`), the event
/// consumer (the worker events stream, one transaction per batch), the retry timer, the cron
/// ticker, and the leader-only maintenance (reaper, restore of unacknowledged messages, lost
/// messages) under a PostgreSQL advisory lock that another scheduler takes over when the
/// leader's session ends. Any number of schedulers can share one database.
public final class SchedulerDaemon: Sendable {
    public let store: SchedulerStore
    public let broker: SchedulerBroker
    let flows: [Flow]
    let config: SchedulerConfig
    let clock: any SchedulerClock
    let listen: PGConnection
    let leaderLock: PGConnection
    let logger: Logger

    public init(databaseURL: String, redis: RedisConfig, flows: [Flow], config: SchedulerConfig,
                clock: any SchedulerClock = SystemClock(), poolSize: Int = 3) {
        self.store = SchedulerStore(db: PGPool(databaseURL, size: poolSize, label: "sched-pg"))
        self.broker = SchedulerBroker(config: redis, consumer: config.name)
        self.flows = flows
        self.config = config
        self.clock = clock
        self.listen = PGConnection(databaseURL, label: "sched-listen")
        self.leaderLock = PGConnection(databaseURL, label: "sched-leader")
        var l = Logger(label: "flowkit.scheduler")
        l[metadataKey: "scheduler"] = "\(config.name)"
        self.logger = l
    }

    /// Registers the flows, then runs every duty until the task is cancelled.
    public func run() async throws {
        try await Migrator.checkCurrent(listen)
        let changed = try await store.registerFlows(flows, now: clock.now())
        logger.info("registered \(flows.count) flows (\(changed.count) new versions)")
        try await withThrowingTaskGroup(of: Void.self) { g in
            g.addTask { await self.loop("run starter") { try await self.runStarterOnce() } }
            g.addTask { await self.eventLoop() }
            g.addTask { await self.loop("event acknowledger") { try await self.acknowledgeDurableEvents() } }
            g.addTask { await self.loop("retry timer") { try await self.retryOnce() } }
            g.addTask { await self.loop("cron ticker") { try await self.tickOnce() } }
            g.addTask { await self.loop("maintenance") { try await self.maintenanceOnce() } }
            try await g.waitForAll()
        }
    }

    /// Runs `body` until cancelled; failures (a database or Redis restart) are logged and retried
    /// with backoff, never fatal.
    func loop(_ name: String, _ body: @escaping @Sendable () async throws -> Void) async {
        var failures = 0
        while !Task.isCancelled {
            do {
                try await body()
                if failures > 0 { logger.info("\(name) recovered") }
                failures = 0
            } catch is CancellationError {
                return
            } catch {
                failures += 1
                if failures == 1 || failures % 20 == 0 { logger.warning("\(name): \(error)") }
                try? await Task.sleep(for: .milliseconds(min(2000, 50 * (1 << min(failures, 6)))))
            }
        }
    }

    // MARK: - Duties (each does one bounded batch; tests call them directly)

    /// Starts queued runs, then waits for the next `NOTIFY flowkit_runs` (at most a second).
    public func runStarterOnce(wait: Double = 1) async throws {
        _ = try await listen.run { s in try s.listen("flowkit_runs") }
        while true {
            let work = try await store.startQueuedRuns(now: clock.now())
            try await broker.perform(work)
            heap.noteBatch(size: work.enqueue.count)
            if work.enqueue.isEmpty { break }
        }
        _ = try await listen.run { s in try s.waitForNotifications(timeout: wait) }
    }

    func eventLoop() async {
        // First what this scheduler read before a crash (its pending entries), then new events.
        // A batch that failed (PostgreSQL restarting) stays pending for this consumer: it is read
        // again first, at the next attempt — not left for another scheduler's claim of abandoned
        // events, which waits for the zombie threshold (a 30 s stall per failed batch).
        let recovered = Flag()
        await loop("event consumer") {
            do {
                if !recovered.value {
                    while try await self.consumeEvents(pending: true) > 0 {}
                    recovered.set()
                }
                _ = try await self.consumeEvents(pending: false)
            } catch {
                recovered.clear()
                throw error
            }
        }
    }

    /// Reads one batch of worker events, commits it, does the broker work, then acknowledges.
    @discardableResult
    public func consumeEvents(pending: Bool = false, blockMillis: Int = 1000) async throws -> Int {
        let batch = try await broker.readEvents(count: config.eventBatch, blockMillis: blockMillis, pendingFirst: pending)
        // Pending entries come back on every read until acknowledged: apply and acknowledge them durably, at once.
        return try await apply(batch, deferAck: !pending)
    }

    /// Commits a batch without waiting for the WAL flush, does its broker work at once (the
    /// next task starts without waiting for the disk), and hands its stream ids to the
    /// acknowledger, which acknowledges them only after a synchronous commit made them durable.
    /// A crash before that leaves them pending in the stream: they are applied again, at least
    /// once, never lost.
    func apply(_ batch: [SchedulerBroker.StreamEntry], deferAck: Bool = true) async throws -> Int {
        guard !batch.isEmpty else { return 0 }
        let events = batch.compactMap(\.event)
        let undecodable = batch.compactMap { e in e.undecodable.map { (id: e.id, text: $0) } }
        if !undecodable.isEmpty {
            for u in undecodable { logger.error("dead-lettered stream entry \(u.id): not a FlowKit event: \(u.text.prefix(200))") }
            try await broker.deadLetterUndecodable(undecodable, by: config.name)
        }
        let t0 = Date()
        let work = try await applyIsolatingPoison(events, durable: !deferAck)
        try await deadLetter(work.orphans)
        let t1 = Date()
        try await broker.perform(work)
        let done = Date()
        heap.noteBatch(size: batch.count + work.enqueue.count)
        SchedulerMetrics.eventBatch.observe(done.timeIntervalSince(t0))
        if !work.enqueue.isEmpty {
            // Hops: from each ended try (worker clock) to its run's downstream messages being enqueued.
            let runs = Set(work.enqueue.compactMap(\.rootId))
            for e in events where (e.kind == .succeeded || e.kind == .failed || e.kind == .skipped) && runs.contains(e.runId ?? "") {
                SchedulerMetrics.hop.observe(max(0, done.timeIntervalSince1970 - e.at))
            }
        }
        logger.trace("applied \(events.count) events in \(Int(t1.timeIntervalSince(t0) * 1e6)) µs, broker work \(Int(Date().timeIntervalSince(t1) * 1e6)) µs, \(work.enqueue.count) enqueued")
        if deferAck { pendingAcks.add(batch.map(\.id)) } else { try await broker.ack(batch.map(\.id)) }
        return batch.count
    }

    /// Applies a batch; when PostgreSQL refuses it (not a lost connection: bad data), applies its
    /// events one by one, so that one poison event holds no other hostage, and dead-letters the
    /// events that fail on their own, with the reason — a deterministic failure would fail again.
    func applyIsolatingPoison(_ events: [WorkerEvent], durable: Bool) async throws -> BrokerWork {
        do {
            return try await store.applyEvents(events, now: clock.now(), durable: durable)
        } catch let e as PGError where !e.isConnectionLoss && events.count > 1 {
            logger.warning("a batch of \(events.count) events failed (\(e)); applying them one by one")
        } catch let e as PGError where !e.isConnectionLoss {
            try await deadLetter([(events[0], "\(e)")])
            return BrokerWork()
        }
        var work = BrokerWork(), poison: [(event: WorkerEvent, reason: String)] = []
        for ev in events {
            do {
                work.merge(try await store.applyEvents([ev], now: clock.now(), durable: durable))
            } catch let e as PGError where !e.isConnectionLoss {
                poison.append((ev, "\(e)"))
            }
        }
        try await deadLetter(poison)
        return work
    }

    private func deadLetter(_ poison: [(event: WorkerEvent, reason: String)]) async throws {
        guard !poison.isEmpty else { return }
        for (ev, why) in poison {
            logger.error("dead-lettered a \(ev.kind.rawValue) event of worker \(ev.worker) for \(ev.runId ?? "-")/\(ev.taskId ?? "-"): \(why)")
        }
        try await broker.deadLetterEvents(poison.map { ($0.0, $0.1) }, by: config.name)
    }

    let pendingAcks = PendingAcks()
    let heap = HeapTrimmer()

    /// Waits for committed-but-unacknowledged events, makes them durable with one synchronous
    /// commit (group commit: one flush for every batch since the last), then acknowledges them.
    public func acknowledgeDurableEvents() async throws {
        let ids = await pendingAcks.next()
        guard !ids.isEmpty else { return }
        do {
            try await store.flushDurably(name: config.name, host: ProcessInfo.processInfo.hostName, startedAt: startedAt, now: clock.now())
            try await broker.ack(ids)
        } catch {
            pendingAcks.add(ids)  // try again; they stay pending in the stream meanwhile
            throw error
        }
    }

    public func retryOnce(maxWait: Double = 1) async throws {
        let work = try await store.queueDueRetries(now: clock.now())
        try await broker.perform(work)
        if work.enqueue.isEmpty {
            let next = try await store.nextRetryTime()
            let wait = next.map { max(0.01, min(maxWait, $0.timeIntervalSince(clock.now()))) } ?? maxWait
            try await Task.sleep(for: .milliseconds(Int(wait * 1000)))
        }
    }

    public func tickOnce(maxWait: Double = 1) async throws {
        let created = try await store.createDueScheduledRuns(now: clock.now())
        for r in created { logger.info("created scheduled run \(r.runId) of \(r.flowId)") }
        if created.isEmpty {
            let next = try await store.nextTickTime()
            let wait = next.map { max(0.01, min(maxWait, $0.timeIntervalSince(clock.now()))) } ?? maxWait
            try await Task.sleep(for: .milliseconds(Int(wait * 1000)))
        }
    }

    /// Outcomes of tasks Celery workers ran, read from Celery's result backend and applied as
    /// the worker events a FlowKit worker would have sent.
    func collectCeleryOutcomes(now: Date) async throws {
        let tries = try await store.celeryTriesInFlight()
        guard !tries.isEmpty else { return }
        let metas = try await broker.celeryResults(tries.map(\.messageId))
        var events: [WorkerEvent] = []
        for t in tries {
            guard let meta = metas[t.messageId], let status = meta["status"]?.stringValue else { continue }
            let worker = "celery:" + (meta["worker"]?.stringValue ?? "worker")
            func event(_ kind: WorkerEvent.Kind) -> WorkerEvent {
                WorkerEvent(kind: kind, worker: worker, at: now, messageId: t.messageId, runId: t.runId, taskId: t.taskId, tryNumber: t.tryNumber)
            }
            switch status {
            case "SUCCESS":
                var e = event(.succeeded)
                e.result = meta["result"]
                e.startedAt = now.timeIntervalSince1970
                events.append(e)
            case "FAILURE", "REVOKED":
                var e = event(.failed)
                let exc = meta["result"]
                let type = exc?["exc_type"]?.stringValue ?? status
                let message = exc?["exc_message"]?.arrayValue?.compactMap(\.stringValue).joined(separator: " ") ?? exc?.compactJSON ?? ""
                e.error = "\(type): \(message)"
                e.startedAt = now.timeIntervalSince1970
                events.append(e)
            case "STARTED" where t.queued:
                events.append(event(.started))
            default:
                break
            }
        }
        guard !events.isEmpty else { return }
        try await broker.perform(try await store.applyEvents(events, now: now))
    }

    /// Leader-only maintenance, then a pause of `maintenanceInterval`.
    public func maintenanceOnce(sleep: Bool = true) async throws {
        let now = clock.now()
        try await store.schedulerHeartbeat(name: config.name, host: ProcessInfo.processInfo.hostName,
                                           startedAt: startedAt, now: now)
        if try await isLeader() {
            let t0 = Date()
            try await maintenance(now: now)
            SchedulerMetrics.maintenance.observe(Date().timeIntervalSince(t0))
        }
        heap.trimIfQuiet()
        if sleep { try await Task.sleep(for: .milliseconds(Int(config.maintenanceInterval * 1000))) }
    }

    let startedAt = Date()

    /// Whether this scheduler holds the maintenance lock (taking it when free). The lock lives
    /// as long as the session: when a leader dies, its lock goes with it.
    public func isLeader() async throws -> Bool {
        try await leaderLock.run { s in
            try s.query("SELECT pg_try_advisory_lock(7240003) AS l").first?.bool("l") ?? false
        }
    }

    func maintenance(now: Date) async throws {
        let staleWorkers = try await store.workersWithStaleHeartbeats(now: now, heartbeatTimeout: config.zombieThreshold)
        let alive = try await broker.aliveWorkers(staleWorkers)
        let reaped = try await store.reapZombies(now: now, heartbeatTimeout: config.zombieThreshold, aliveWorkers: alive)
        try await broker.perform(reaped)
        if !reaped.forget.isEmpty { logger.warning("reaped \(reaped.forget.count) tries (zombies or timeouts)") }
        try await broker.restoreUnacked(olderThan: now.addingTimeInterval(-config.visibilityTimeout))
        let abandoned = try await broker.claimAbandonedEvents(idleMillis: Int(config.zombieThreshold * 1000), count: config.eventBatch)
        _ = try await apply(abandoned)
        try await collectCeleryOutcomes(now: now)
        let stale = try await store.staleQueued(now: now, olderThan: config.lostMessageAfter)
        let missing = try await broker.missingMessages(stale)
        if !missing.isEmpty {
            let msgs = try await store.rebuildQueuedMessages(missing, now: now)
            var work = BrokerWork()
            work.enqueue = msgs
            try await broker.perform(work)
            logger.warning("enqueued again \(msgs.count) messages the broker had lost")
        }
    }
}

/// A flag one task sets and others read.
final class Flag: @unchecked Sendable {
    private let lock = NSLock()
    private var v = false
    var value: Bool { lock.withLock { v } }
    func set() { lock.withLock { v = true } }
    func clear() { lock.withLock { v = false } }
}

/// Stream ids whose events are committed but not yet known durable; `next` waits for some.
final class PendingAcks: @unchecked Sendable {
    private let lock = NSLock()
    private var ids: [String] = []
    private var waiter: CheckedContinuation<Void, Never>?

    func add(_ new: [String]) {
        lock.withLock { ids += new }
        wake()
    }

    private func wake() {
        let w: CheckedContinuation<Void, Never>? = lock.withLock { let w = waiter; waiter = nil; return w }
        w?.resume()
    }

    /// Everything pending, waiting up to a second when there is nothing yet; returns at once
    /// when the calling task is cancelled (so the acknowledger's loop can end).
    func next() async -> [String] {
        let ready: Bool = lock.withLock { !ids.isEmpty }
        if !ready && !Task.isCancelled {
            let timer = Task { [self] in
                try? await Task.sleep(for: .seconds(1))
                wake()
            }
            await withTaskCancellationHandler {
                await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                    let resumeNow: Bool = lock.withLock {
                        if !ids.isEmpty || waiter != nil { return true }
                        waiter = c
                        return false
                    }
                    if resumeNow { c.resume() }
                }
            } onCancel: {
                wake()
            }
            timer.cancel()
        }
        return lock.withLock { let out = ids; ids = []; return out }
    }
}
