public import CeleryProtocol
public import FlowKit
public import Foundation
public import RedisClient

/// The scheduler's side of Redis: enqueueing task messages, cancel flags, and the events stream.
public final class SchedulerBroker: Sendable {
    public let redis: RedisConnection
    /// Blocking reads of the events stream get a connection of their own.
    let events: RedisConnection
    /// Dispatch (the next tasks' messages) too: it is on the hop from one task to the next, and
    /// must not wait behind acknowledgements or maintenance.
    let dispatch: RedisConnection
    let consumer: String
    /// The Redis database, for Celery's pidbox channel (`/<db>.celery.pidbox`).
    let database: Int

    public init(config: RedisConfig, consumer: String) {
        self.database = config.database
        self.redis = RedisConnection(config, label: "sched-redis")
        self.events = RedisConnection(config, label: "sched-events", readTimeout: 30)
        self.dispatch = RedisConnection(config, label: "sched-dispatch")
        self.consumer = consumer
    }

    /// Does what a committed transaction asked, in one pipelined round trip.
    public func perform(_ work: BrokerWork) async throws {
        guard !work.isEmpty else { return }
        var cmds: [[String]] = []
        // The runs' keys first: a worker's claim refuses a message whose run has none.
        let runs = Set(work.enqueue.compactMap { $0.extraHeaders[FlowKitKeys.runHeader]?.stringValue })
        for r in runs.sorted() { cmds.append(["SET", FlowKitKeys.run(r), "1", "EX", String(FlowKitKeys.runKeySeconds)]) }
        for m in work.enqueue { cmds += KombuLayout.enqueueCommands(m) }
        for id in work.cancel { cmds.append(["SET", FlowKitKeys.cancel(id), "1", "EX", "86400"]) }
        // Tasks a Celery worker runs stop as Airflow's Celery executor stops them: revoked with
        // terminate. FlowKit workers read the cancel keys above; Celery workers ignore ids they
        // never had.
        if !work.cancel.isEmpty { cmds.append(CeleryControl.revokeCommand(taskIds: work.cancel, database: database)) }
        for id in work.forget { cmds += KombuLayout.ackCommands(deliveryTag: id) }
        let commands = cmds
        try await dispatch.run { s in
            for r in try s.pipeline(commands) { try r.orThrow() }
        }
    }

    /// Up to `count` events for this consumer: first its own pending ones (after a crash), then
    /// new ones, blocking up to `blockMillis`. Each comes with its stream id, to acknowledge.
    public func readEvents(count: Int, blockMillis: Int, pendingFirst: Bool) async throws -> [StreamEntry] {
        let consumer = self.consumer
        return try await events.run { s in
            func read(_ start: String, block: Bool) throws -> RedisValue {
                var args = ["XREADGROUP", "GROUP", FlowKitKeys.eventsGroup, consumer, "COUNT", String(count)]
                if block { args += ["BLOCK", String(blockMillis)] }
                args += ["STREAMS", FlowKitKeys.events, start]
                return try s.command(args)
            }
            var reply = try read(pendingFirst ? "0" : ">", block: !pendingFirst)
            if case .error(let m) = reply, m.hasPrefix("NOGROUP") {
                try s.command(["XGROUP", "CREATE", FlowKitKeys.events, FlowKitKeys.eventsGroup, "0", "MKSTREAM"]).orThrow()
                reply = try read(">", block: true)
            }
            try reply.orThrow()
            return Self.parseStream(reply)
        }
    }

    /// One entry of the events stream: its id, the event, and the raw text when it did not decode.
    public struct StreamEntry: Sendable {
        public var id: String
        public var event: WorkerEvent?
        public var undecodable: String?
        public init(id: String, event: WorkerEvent?, undecodable: String? = nil) { self.id = id; self.event = event; self.undecodable = undecodable }
    }

    static func parseStream(_ reply: RedisValue) -> [StreamEntry] {
        var out: [StreamEntry] = []
        for stream in reply.array ?? [] {
            guard let parts = stream.array, parts.count == 2 else { continue }
            for entry in parts[1].array ?? [] {
                guard let e = entry.array, e.count == 2, let id = e[0].string else { continue }
                let fields = e[1].array ?? []
                var json: String?
                var i = 0
                while i + 1 < fields.count {
                    if fields[i].string == "e" { json = fields[i + 1].string }
                    i += 2
                }
                if let event = json.flatMap({ try? WorkerEvent.decode($0) }) {
                    out.append(StreamEntry(id: id, event: event))
                } else {
                    let fields = (0..<fields.count / 2).map { "\(fields[2 * $0].string ?? "?")=\(fields[2 * $0 + 1].string ?? "?")" }
                    out.append(StreamEntry(id: id, event: nil, undecodable: fields.joined(separator: " ")))
                }
            }
        }
        return out
    }

    /// Takes over events another scheduler read but never acknowledged (it died).
    public func claimAbandonedEvents(idleMillis: Int, count: Int) async throws -> [StreamEntry] {
        let consumer = self.consumer
        return try await redis.run { s in
            let reply = try s.command(["XAUTOCLAIM", FlowKitKeys.events, FlowKitKeys.eventsGroup, consumer, String(idleMillis), "0-0",
                                       "COUNT", String(count)])
            if case .error(let m) = reply, m.hasPrefix("NOGROUP") { return [] }
            try reply.orThrow()
            guard let parts = reply.array, parts.count >= 2 else { return [] }
            return Self.parseStream(.array([.array([.string(FlowKitKeys.events), parts[1]])]))
        }
    }

    /// How many entries the dead-letter list keeps (the oldest go first).
    public static let deadLetterCapacity = DeadLetter.maxEntries

    /// Puts events the database refused on the dead-letter list, each with its reason.
    public func deadLetterEvents(_ events: [(event: WorkerEvent, reason: String)], by scheduler: String, at: Date) async throws {
        guard !events.isEmpty else { return }
        let now = at.timeIntervalSince1970
        let cmds = events.flatMap { e -> [[String]] in
            DeadLetter.commands(["kind": "event", "reason": .string(e.reason), "scheduler": .string(scheduler), "at": .double(now)],
                                payloadKey: "event", payload: e.event.json)
        }
        try await redis.run { s in for r in try s.pipeline(cmds) { try r.orThrow() } }
    }

    /// Puts stream entries that are not events at all on the dead-letter list, as they were.
    public func deadLetterUndecodable(_ entries: [(id: String, text: String)], by scheduler: String, at: Date) async throws {
        guard !entries.isEmpty else { return }
        let now = at.timeIntervalSince1970
        let cmds = entries.flatMap { e -> [[String]] in
            DeadLetter.commands(["kind": "event", "reason": .string("stream entry \(e.id) is not a FlowKit event"), "scheduler": .string(scheduler),
                                 "at": .double(now)], payloadKey: "entry", payload: e.text)
        }
        try await redis.run { s in for r in try s.pipeline(cmds) { try r.orThrow() } }
    }

    public func ack(_ ids: [String]) async throws {
        guard !ids.isEmpty else { return }
        let args = ["XACK", FlowKitKeys.events, FlowKitKeys.eventsGroup] + ids
        try await redis.run { s in try s.command(args).orThrow() }
    }

    /// Which of `candidates` (message id, queue) are in neither a queue list nor `unacked`, and
    /// have not run: a worker writes the Celery result (`celery-task-meta-<id>`) in the same MULTI
    /// as the outcome event and the acknowledgement, so a try whose result exists has finished and
    /// its outcome waits in the events stream (the database may be catching up after an outage).
    /// Sending it again would run it twice.
    public func missingMessages(_ candidates: [(messageId: String, queue: String)]) async throws -> [String] {
        guard !candidates.isEmpty else { return [] }
        let list = candidates
        return try await redis.run { s in
            var missing: [String] = []
            let finished = try s.pipeline(list.map { ["EXISTS", CeleryResult.key($0.messageId)] })
            for (c, done) in zip(list, finished) where done.int != 1 {
                if try !Self.located(s, c, listsOnly: false) { missing.append(c.messageId) }
            }
            return missing
        }
    }

    /// `KombuLayout.locateScript` for one message: in a queue list or claimed (`listsOnly`: in a queue list).
    static func located(_ s: RedisSession, _ c: (messageId: String, queue: String), listsOnly: Bool) throws -> Bool {
        let keys = KombuLayout.lists(for: c.queue) + [KombuLayout.unacked, KombuLayout.unackedIndex]
        let args = ["EVAL", KombuLayout.locateScript, String(keys.count)] + keys + [c.messageId] + (listsOnly ? ["lists"] : [])
        return try s.command(args).orThrow().int == 1
    }

    /// Which of `candidates` (message id, queue) wait in a queue list for a worker to take them —
    /// the unacked restorer put a lost worker's claim back — rather than being claimed or gone.
    public func waitingInQueue(_ candidates: [(messageId: String, queue: String)]) async throws -> Set<String> {
        guard !candidates.isEmpty else { return [] }
        let list = candidates
        return try await redis.run { s in Set(try list.filter { try Self.located(s, $0, listsOnly: true) }.map(\.messageId)) }
    }

    /// Seconds since one of this broker's connections found the Redis master moved (a Sentinel
    /// failover); nil when none has.
    public var secondsSinceMasterChange: Double? { RedisConnection.secondsSinceMasterChange([redis, events, dispatch]) }

    /// kombu's `restore_visible`: messages claimed before `cutoff` and never acknowledged go back.
    @discardableResult
    public func restoreUnacked(olderThan cutoff: Date) async throws -> Int {
        let c = String(cutoff.timeIntervalSince1970)
        return try await redis.run { s in
            try s.command(["EVAL", KombuLayout.restoreScript, "2", KombuLayout.unacked, KombuLayout.unackedIndex, c, "1000"]).orThrow().int ?? 0
        }
    }

    /// Which of `workers` hold a live heartbeat key in Redis right now.
    public func aliveWorkers(_ workers: [String]) async throws -> Set<String> {
        guard !workers.isEmpty else { return [] }
        let names = workers
        return try await redis.run { s in
            let replies = try s.pipeline(names.map { ["EXISTS", FlowKitKeys.workerAlive($0)] })
            return Set(zip(names, replies).filter { $0.1.int == 1 }.map(\.0))
        }
    }

    /// Celery result-backend entries (`celery-task-meta-<id>`) of these task ids, where present.
    public func celeryResults(_ taskIds: [String]) async throws -> [String: JSONValue] {
        guard !taskIds.isEmpty else { return [:] }
        let ids = taskIds
        return try await redis.run { s in
            let reply = try s.command(["MGET"] + ids.map(CeleryResult.key)).orThrow()
            var out: [String: JSONValue] = [:]
            for (id, v) in zip(ids, reply.array ?? []) {
                if let text = v.string, let meta = try? JSONValue.parse(text) { out[id] = meta }
            }
            return out
        }
    }

    public func ping() async throws {
        try await redis.run { s in try s.command(["PING"]).orThrow() }
    }

    /// A page of the dead-letter list, newest first, and its length (it keeps the newest
    /// `DeadLetter.maxEntries`; older entries are dropped as new ones come). An entry that is not
    /// JSON is shown as `{"raw": …}`.
    public func deadLetters(offset: Int, limit: Int) async throws -> (total: Int, entries: [JSONValue]) {
        let replies = try await redis.run { s in
            try s.pipeline([["LLEN", FlowKitKeys.deadLetter], ["LRANGE", FlowKitKeys.deadLetter, String(offset), String(offset + limit - 1)]])
        }
        let entries = (replies[1].array ?? []).compactMap(\.string).map { text -> JSONValue in
            (try? JSONValue.parse(text)).flatMap { $0.objectValue == nil ? nil : $0 } ?? ["raw": .string(text)]
        }
        return (replies[0].int ?? 0, entries)
    }

    /// Messages waiting per queue list, for `/metrics`.
    public func queueDepths(_ queues: [String]) async throws -> [String: Int] {
        let qs = queues
        return try await redis.run { s in
            var out: [String: Int] = [:]
            for q in qs {
                let replies = try s.pipeline(KombuLayout.lists(for: q).map { ["LLEN", $0] })
                out[q] = replies.compactMap(\.int).reduce(0, +)
            }
            return out
        }
    }
}
