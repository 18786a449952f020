import CeleryProtocol
import FlowKit
import Foundation
import Logging
import ProcessSupport
import RedisClient

/// The worker's producer: takes messages from Redis (claims them into `unacked`), takes back
/// what a claim whose reply was lost took, keeps its claims visible while they run, and gives
/// back the messages it must not run. It never runs a task and never reports an outcome.
final class Claimer: Sendable {
    let queues: [String]
    let maxMessageBytes: Int
    let visibilityTimeout: Double
    let clock: any WallClock
    let logger: Logger
    /// The consume loop's own connection (it blocks while waiting for a message).
    let blocking: RedisConnection
    /// The shared connection, for hand-backs and recoveries.
    let redis: RedisConnection
    let retry: Retry
    let state = ClaimState()

    init(config: WorkerConfig, redis: RedisConnection, blocking: RedisConnection, logger: Logger, retry: Retry) {
        self.queues = config.queues
        self.maxMessageBytes = config.maxMessageBytes
        self.visibilityTimeout = config.visibilityTimeout
        self.clock = config.clock
        self.logger = logger
        self.redis = redis
        self.blocking = blocking
        self.retry = retry
    }

    /// Claims up to `count` messages: first what claims whose replies were lost took, else what
    /// waits now, else — after waiting up to a second for one to arrive — what arrived. A claim
    /// that fails is noted, so that what it may have taken comes back at the next call.
    func claim(count: Int) async throws -> [KombuLayout.Claimed] {
        let keys = [FlowKitKeys.claim(UUID().uuidString), FlowKitKeys.claim(UUID().uuidString)]
        do {
            if let lost = state.takeUnanswered() {
                let recovered = try await redis.run { s in
                    try lost.flatMap { KombuLayout.recovered(try s.command(KombuLayout.recoverCommand(claimKey: $0)).orThrow()) }
                }
                if !recovered.isEmpty { logger.warning("took back \(recovered.count) messages claimed by a call whose reply was lost") }
                return recovered
            }
            let reply = try await claimOrWait(count: count, keys: keys)
            for why in reply.rejected { logger.warning("dead-lettered a message at the claim: \(why)") }
            if reply.rejected.contains(where: { $0.contains(" bytes is over the limit") }) { releaseFreeHeapMemory() }
            return reply.messages
        } catch {
            state.noteUnanswered(keys)  // either claim may have run
            throw error
        }
    }

    private func claimOrWait(count: Int, keys: [String]) async throws -> KombuLayout.ClaimReply {
        let queues = self.queues, maxBytes = maxMessageBytes, clock = self.clock
        @Sendable func command(_ key: String) -> [String] {
            KombuLayout.claimCommand(queues: queues, count: count, now: clock.now().timeIntervalSince1970, maxMessageBytes: maxBytes, claimKey: key)
        }
        // On the consume loop's own connection: a claim must not hold up a finished try's
        // report, which goes out on the shared one.
        let first = command(keys[0])
        let reply = try await blocking.run { s in KombuLayout.claimed(try s.command(first).orThrow()) }
        guard reply.messages.isEmpty else { return reply }
        // Wait for the next message without taking it; when one arrives, claim at once on the
        // same connection and thread: no hop between the wake-up and the claim.
        let wait = KombuLayout.waitCommand(queue: queues[state.nextQueueIndex() % queues.count], timeout: max(0.05, 1.0 / Double(queues.count)))
        return try await blocking.run { s in
            let woke = try s.command(wait).orThrow()
            guard woke != .null else { return KombuLayout.ClaimReply(messages: [], rejected: []) }
            // The wait hands over the element it saw: an oversized one reaches this process
            // once, here, and is dropped at once (the claim refuses it).
            if (woke.string?.utf8.count ?? 0) > maxBytes { releaseFreeHeapMemory() }
            return KombuLayout.claimed(try s.command(command(keys[1])).orThrow())
        }
    }

    // MARK: - After a Redis failover

    /// How long claims wait after this worker found the Redis master moved (at most half the
    /// visibility timeout, whose restores are held back as long).
    static let failoverSettle = 2.0

    /// A message claimed from a new master may be a try another worker finished on the old one
    /// just before it went, whose report the old master took with it. That worker sends the
    /// report again as soon as it reaches the new master and takes the message back from
    /// `unacked` (`Reporter.replayLost`). So claims made within `failoverSettle` of the move
    /// wait until then, and only those still claimed run.
    func settle(_ claimed: [KombuLayout.Claimed]) async -> [KombuLayout.Claimed] {
        guard !claimed.isEmpty, blocking.config.masterName != nil else { return claimed }
        return await settle(claimed, sinceMasterChange: RedisConnection.secondsSinceMasterChange([redis, blocking]))
    }

    func settle(_ claimed: [KombuLayout.Claimed], sinceMasterChange: Double?) async -> [KombuLayout.Claimed] {
        guard !claimed.isEmpty, let since = sinceMasterChange else { return claimed }
        let settle = min(Self.failoverSettle, visibilityTimeout / 2)
        guard since < settle else { return claimed }
        try? await Task.sleep(for: .milliseconds(Int((settle - since) * 1000)))
        let checks = claimed.map { ["HEXISTS", KombuLayout.unacked, CeleryMessage.deliveryTag(of: $0.raw) ?? ""] }
        guard let replies = try? await redis.run({ s in try s.pipeline(checks) }), replies.count == claimed.count else { return claimed }
        let kept = zip(claimed, replies).filter { $0.1.int != 0 }.map(\.0)
        if kept.count < claimed.count {
            logger.warning("the Redis master moved: \(claimed.count - kept.count) of \(claimed.count) messages claimed since were tries another worker had finished on the old master; not run again")
        }
        return kept
    }

    // MARK: - Handing back

    /// How many messages may wait to be handed back while their slots take other work.
    static let maxPendingHandBacks = 100

    /// Hands back a message this worker must not run, after a wait that grows with the times it
    /// came back, so that a fleet without its version does not spin on it. Returns those times
    /// (1 the first time). Up to `maxPendingHandBacks` wait without holding the caller; past
    /// that the caller waits too, so the worker claims no faster than it gives back.
    @discardableResult
    func handBack(messageId: String, tag: String, onCount: @Sendable (Int) async -> Void) async -> Int {
        let count = FlowKitKeys.handBackCountCommands(messageId)
        let times = (try? await redis.run { s in try s.pipeline(count).first?.int }) ?? 1
        await onCount(times)
        // Well inside the visibility timeout: a claim restored by the leader and claimed again
        // meanwhile must not be taken back from its new worker (the heartbeat refreshes it too).
        let delay = min(5.0, visibilityTimeout / 4, 0.1 * Double(1 << min(times - 1, 6)))
        let crowded = state.handingBack(tag) > Self.maxPendingHandBacks
        let later = Task {
            try? await Task.sleep(for: .milliseconds(Int(delay * 1000)))
            guard self.state.handedBack(tag) else { return }  // a drain gave it back already
            await self.giveBack([tag], behindWaiting: true)
        }
        if crowded { await later.value }
        return times
    }

    /// Puts claimed messages back on their queues at once: next in line, or `behindWaiting`
    /// every message waiting, so that a message no worker here can run does not hold up others.
    func giveBack(_ tags: [String], behindWaiting: Bool = false) async {
        guard !tags.isEmpty else { return }
        let cmds = KombuLayout.giveBackCommands(tags: tags, behindWaiting: behindWaiting)
        await retry.reliably("give back") { try await self.redis.run { s in _ = try s.pipeline(cmds) } }
    }

    /// The messages waiting to be handed back, now owned by the caller (a drain gives them back).
    func takePendingHandBacks() -> [String] { state.takeHandBacks() }

    // MARK: - Visibility

    /// What keeps the claims of `running` (and of the messages waiting to be handed back)
    /// visible, and restores claims of dead workers past the visibility timeout: commands for
    /// the heartbeat's pipeline, whose last reply is the restore's.
    func visibilityCommands(running: [String]) -> [[String]] {
        let now = clock.now().timeIntervalSince1970
        let refresh = KombuLayout.refreshClaimCommands(tags: running + state.pendingHandBackTags, now: now)
        // After a Redis failover every claim looks stale: no worker could refresh its claims
        // while it looked for the new master. Restoring them then would run other workers'
        // tries a second time beside them; restore nothing for one visibility timeout, while
        // the other workers refresh theirs (the schedulers' restorer waits the same way).
        if let since = RedisConnection.secondsSinceMasterChange([redis, blocking]), since < visibilityTimeout {
            return refresh
        }
        return refresh + [KombuLayout.restoreCommand(claimedBefore: now - visibilityTimeout, limit: 100)]
    }
}

/// The claimer's mutable part, behind a lock.
final class ClaimState: @unchecked Sendable {
    private let lock = NSLock()
    private var unanswered: [String] = []
    private var queueIndex = 0
    /// Delivery tags of messages waiting to be handed back.
    private var pendingHandBacks = Set<String>()

    func noteUnanswered(_ keys: [String]) { lock.withLock { if unanswered.count < 100 { unanswered += keys } } }
    func takeUnanswered() -> [String]? {
        lock.withLock { if unanswered.isEmpty { return nil }; defer { unanswered = [] }; return unanswered }
    }
    func nextQueueIndex() -> Int { lock.withLock { defer { queueIndex += 1 }; return queueIndex } }
    /// Notes a message waiting to be handed back; returns how many wait.
    func handingBack(_ tag: String) -> Int { lock.withLock { pendingHandBacks.insert(tag); return pendingHandBacks.count } }
    /// Whether `tag` was still waiting (and is no longer).
    func handedBack(_ tag: String) -> Bool { lock.withLock { pendingHandBacks.remove(tag) != nil } }
    var pendingHandBackTags: [String] { lock.withLock { Array(pendingHandBacks) } }
    func takeHandBacks() -> [String] { lock.withLock { defer { pendingHandBacks = [] }; return Array(pendingHandBacks) } }
}
