import CeleryProtocol
import FlowKit
import Foundation
import PostgresClient
import Logging
import CoreMetrics

/// Reads the worker events stream in batches and applies each batch in one transaction, then
/// does its broker work (the next tasks' messages) at once. The stream entries are acknowledged
/// by the `EventAcknowledger` once a synchronous commit has made the batch durable.
///
/// First it reads what this scheduler read before and never acknowledged (after a crash, or
/// a batch that failed when PostgreSQL went away): those are applied again at once — not left
/// for another scheduler's `AbandonedEventClaimer`, which waits for the zombie threshold.
public final class EventConsumer: SchedulerDuty, @unchecked Sendable {
    public struct Config: Sendable {
        /// Events per batch (one transaction).
        public var batch: Int = 1000
        /// The longest blocking read of the stream.
        public var blockMillis: Int = 1000
        public init() {}
        public func validate() throws { try requirePositive("event consumer", ["batch": Double(batch), "blockMillis": Double(blockMillis)]) }
    }

    public let name = "event consumer"
    public let leaderOnly = false
    let context: SchedulerContext
    public let config: Config
    let acks: PendingAcks
    private let lock = NSLock()
    private var pendingRead = false

    init(_ context: SchedulerContext, config: Config, acks: PendingAcks) {
        self.context = context
        self.config = config
        self.acks = acks
    }

    public func runOnce() async throws -> Double {
        do {
            if lock.withLock({ !pendingRead }) {
                while try await consume(pending: true) > 0 {}
                lock.withLock { pendingRead = true }
            }
            _ = try await consume(pending: false)
        } catch {
            lock.withLock { pendingRead = false }
            throw error
        }
        return 0
    }

    /// Reads one batch of worker events, commits it, does the broker work, then hands its ids
    /// to the acknowledger (or, for entries read again, acknowledges them after a durable commit).
    @discardableResult
    public func consume(pending: Bool = false, blockMillis: Int? = nil) async throws -> Int {
        let batch = try await context.broker.readEvents(count: config.batch, blockMillis: blockMillis ?? config.blockMillis, pendingFirst: pending)
        return try await apply(batch, deferAck: !pending)
    }

    /// Commits a batch without waiting for the WAL flush, does its broker work at once (the
    /// next task starts without waiting for the disk), and hands its stream ids to the
    /// acknowledger, which acknowledges them only after a synchronous commit made them durable.
    /// A crash before that leaves them pending in the stream: they are applied again, at least
    /// once, never lost.
    public func apply(_ batch: [SchedulerBroker.StreamEntry], deferAck: Bool = true) async throws -> Int {
        guard !batch.isEmpty else { return 0 }
        let broker = context.broker, logger = context.logger
        let events = batch.compactMap(\.event)
        let undecodable = batch.compactMap { e in e.undecodable.map { (id: e.id, text: $0) } }
        if !undecodable.isEmpty {
            for u in undecodable { logger.error("dead-lettered stream entry \(u.id): not a FlowKit event: \(u.text.prefix(200))") }
            try await broker.deadLetterUndecodable(undecodable, by: context.name, at: context.clock.now())
        }
        let t0 = Date()
        let work = try await applyIsolatingPoison(events, durable: !deferAck)
        try await deadLetter(work.orphans)
        let t1 = Date()
        try await broker.perform(work)
        let done = Date()
        // Workers' heartbeats are not work: counted, they arrived every 2 s and the scheduler
        // never looked quiet, so the heap of a burst was never given back (W4: 142 MiB, not 60).
        context.heap.noteBatch(size: events.filter { $0.kind != .heartbeat }.count + undecodable.count + work.enqueue.count)
        context.metrics.eventBatch.recordSeconds(done.timeIntervalSince(t0))
        if !work.enqueue.isEmpty {
            // Hops: from each ended try (worker clock) to its run's downstream messages being enqueued.
            let runs = Set(work.enqueue.compactMap(\.rootId))
            for e in events where (e.kind == .succeeded || e.kind == .failed || e.kind == .skipped) && runs.contains(e.runId ?? "") {
                context.metrics.hop.recordSeconds(max(0, done.timeIntervalSince1970 - e.at))
            }
        }
        logger.trace("applied \(events.count) events in \(Int(t1.timeIntervalSince(t0) * 1e6)) µs, broker work \(Int(Date().timeIntervalSince(t1) * 1e6)) µs, \(work.enqueue.count) enqueued")
        if deferAck { acks.add(batch.map(\.id)) } else { try await broker.ack(batch.map(\.id)) }
        return batch.count
    }

    /// Applies a batch; when PostgreSQL refuses it (not a lost connection: bad data), applies its
    /// events one by one, so that one poison event holds no other hostage, and dead-letters the
    /// events that fail on their own, with the reason — a deterministic failure would fail again.
    func applyIsolatingPoison(_ events: [WorkerEvent], durable: Bool) async throws -> BrokerWork {
        let store = context.store, clock = context.clock
        do {
            return try await store.applyEvents(events, now: clock.now(), durable: durable)
        } catch let e as PGError where !e.isConnectionLoss && events.count > 1 {
            context.logger.warning("a batch of \(events.count) events failed (\(e)); applying them one by one")
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
            context.logger.error("dead-lettered a \(ev.kind.rawValue) event of worker \(ev.worker) for \(ev.runId ?? "-")/\(ev.taskId ?? "-"): \(why)")
        }
        try await context.broker.deadLetterEvents(poison, by: context.name, at: context.clock.now())
    }
}

/// Acknowledges applied events once they are durable: waits for committed-but-unacknowledged
/// batches, makes them durable with one synchronous commit (group commit: one flush for every
/// batch since the last, which also records the scheduler's heartbeat), then acknowledges them.
public struct EventAcknowledger: SchedulerDuty {
    public let name = "event acknowledger"
    public let leaderOnly = false
    let context: SchedulerContext
    let acks: PendingAcks
    let startedAt: Date


    public func runOnce() async throws -> Double {
        let ids = await acks.next()
        guard !ids.isEmpty else { return 0 }
        do {
            try await context.store.flushDurably(name: context.name, host: ProcessInfo.processInfo.hostName, startedAt: startedAt,
                                                 now: context.clock.now())
            try await context.broker.ack(ids)
        } catch {
            acks.add(ids)  // try again; they stay pending in the stream meanwhile
            throw error
        }
        return 0
    }
}

/// Takes over events another scheduler read but never acknowledged (it died), once they have
/// been idle for the zombie threshold, and applies them. Leader only.
public struct AbandonedEventClaimer: SchedulerDuty {
    public struct Config: Sendable {
        /// How long an entry stays unacknowledged before it counts as abandoned.
        public var idle: Double = 30
        public var interval: Double = 2
        public init() {}
        public func validate() throws { try requirePositive("abandoned-event claimer", ["idle": idle, "interval": interval]) }
    }

    public let name = "abandoned-event claimer"
    public let leaderOnly = true
    let consumer: EventConsumer
    let config: Config


    public func runOnce() async throws -> Double {
        let abandoned = try await consumer.context.broker.claimAbandonedEvents(idleMillis: Int(config.idle * 1000), count: consumer.config.batch)
        _ = try await consumer.apply(abandoned)
        return config.interval
    }
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
