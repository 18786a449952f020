public import Foundation
import PostgresClient

/// What changed, as the schedulers announce it after each commit: `flowkit_changes` carries a
/// run's internal id when its task instances changed; `flowkit_runs` a flow or run id when runs
/// were created, started or ended. One LISTEN session per API process fans them out to its
/// subscribers (the dashboard's server-sent events), so a screen updates within a second of a
/// change without polling every run.
public final class ChangeFeed: @unchecked Sendable {
    public struct Change: Sendable, Equatable {
        public var channel: String
        public var payload: String
    }

    static let channels = [SchedulerStore.changesChannel, "flowkit_runs"]
    let conninfo: String
    private let lock = NSLock()
    private var subscribers: [UUID: AsyncStream<Change>.Continuation] = [:]
    private var listener: Task<Void, Never>?
    private var isListening = false

    public init(store: SchedulerStore) { conninfo = store.db.conninfo }

    /// A stream of changes until `unsubscribe`; the listening session starts with the first subscriber.
    public func subscribe() -> (id: UUID, changes: AsyncStream<Change>) {
        let id = UUID()
        let (stream, continuation) = AsyncStream<Change>.makeStream(bufferingPolicy: .bufferingNewest(1000))
        lock.withLock {
            subscribers[id] = continuation
            if listener == nil { listener = Task.detached { [weak self] in await self?.listen() } }
        }
        continuation.onTermination = { [weak self] _ in self?.unsubscribe(id) }
        return (id, stream)
    }

    public func unsubscribe(_ id: UUID) {
        let c = lock.withLock { subscribers.removeValue(forKey: id) }
        c?.finish()
    }

    /// The channel name of a keep-alive tick, sent to one subscriber by `poke`.
    public static let keepAlive = "keep-alive"

    /// Wakes one subscriber with a keep-alive tick.
    public func poke(_ id: UUID) {
        let c = lock.withLock { subscribers[id] }
        c?.yield(Change(channel: Self.keepAlive, payload: ""))
    }

    /// Waits (at most `timeout` seconds) until the session listens, so that a subscriber hears
    /// every change committed after this returns true.
    public func waitUntilListening(timeout: Double = 5) async -> Bool {
        let end = ContinuousClock.now.advanced(by: .milliseconds(Int64(timeout * 1000)))
        while ContinuousClock.now < end {
            if lock.withLock({ isListening }) { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return false
    }

    private func listen() async {
        let conn = PGConnection(PGEndpoint.session(conninfo), label: "api-changes")  // LISTEN needs a session
        defer { conn.close() }
        var listening = false
        while !Task.isCancelled {
            do {
                if !listening {
                    _ = try await conn.run { s in for c in Self.channels { try s.listen(c) } }
                    listening = true
                    lock.withLock { isListening = true }
                }
                let got = try await conn.run { s in try s.waitForNotifications(timeout: 1) }
                guard !got.isEmpty else { continue }
                let subs = lock.withLock { Array(subscribers.values) }
                for n in got { for c in subs { c.yield(Change(channel: n.channel, payload: n.payload)) } }
            } catch {
                listening = false
                lock.withLock { isListening = false }
                // The database went away: try again shortly; the dashboard also refreshes on reconnect.
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }
}

extension SchedulerStore {
    /// Announces that a run's task instances changed (after the transaction commits).
    static let changesChannel = "flowkit_changes"

    func announceChange(_ s: PGSession, runPk: Int) { s.notifyAfterCommit(Self.changesChannel, String(runPk)) }
}
