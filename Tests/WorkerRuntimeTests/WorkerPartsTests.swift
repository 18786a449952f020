import CeleryProtocol
import FlowKit
import FlowKitTesting
import Foundation
import Logging
import RedisClient
import Testing
@testable import WorkerRuntime

/// The worker's three parts, each on its own: the claimer and the reporter against a real Redis
/// with a clock the test moves, the executor with no server at all.
enum Parts {
    static func config(_ clock: ManualClock, queues: [String] = ["parts"], visibility: Double = 300) -> WorkerConfig {
        var c = WorkerConfig(name: "parts-worker", queues: queues, concurrency: 2)
        c.clock = clock
        c.visibilityTimeout = visibility
        c.heartbeatInterval = 2
        return c
    }

    static func claimer(_ redis: RedisConfig, _ config: WorkerConfig) -> (Claimer, RedisConnection) {
        let shared = RedisConnection(redis, label: "parts")
        let log = Logger(label: "parts")
        return (Claimer(config: config, redis: shared, blocking: RedisConnection(redis, label: "parts-blocking", readTimeout: 10),
                        logger: log, retry: Retry(logger: log)), shared)
    }

    static func enqueue(_ conn: RedisConnection, _ ids: [String], queue: String = "parts") async throws {
        let cmds = ids.flatMap { KombuLayout.enqueueCommands(CeleryMessage(id: $0, task: "flowkit.echo", queue: queue)) }
        try await conn.run { s in for r in try s.pipeline(cmds) { try r.orThrow() } }
    }

    static func ids(_ claimed: [KombuLayout.Claimed]) throws -> [String] { try claimed.map { try CeleryMessage.decode($0.raw).id } }

    static func waiting(_ conn: RedisConnection, queue: String = "parts") async throws -> [String] {
        try await conn.run { s in try s.command(["LRANGE", queue, "0", "-1"]).orThrow().array ?? [] }
            .compactMap { $0.string }.map { try CeleryMessage.decode($0).id }
    }

    static func claimed(_ conn: RedisConnection, _ tag: String) async throws -> Bool {
        try await conn.run { s in try s.command(["HEXISTS", KombuLayout.unacked, tag]).orThrow().int } == 1
    }
}

@Suite("Worker parts: claimer", .serialized)
struct ClaimerTests {
    @Test("claims at most what it is asked for, oldest first, into unacked")
    func claims() async throws {
        let redis = try await TestServers.freshRedis()
        let (claimer, conn) = Parts.claimer(redis, Parts.config(ManualClock()))
        try await Parts.enqueue(conn, ["m1", "m2", "m3"])
        let got = try Parts.ids(try await claimer.claim(count: 2))
        #expect(got == ["m1", "m2"])
        #expect(try await Parts.claimed(conn, "m1"))
        #expect(try await Parts.claimed(conn, "m2"))
        #expect(try await Parts.waiting(conn) == ["m3"])
        // Nothing waiting: the claim waits a moment for a message, and returns none.
        _ = try await claimer.claim(count: 5)
        #expect(try await claimer.claim(count: 5).isEmpty)
    }

    @Test("claims made just after the Redis master moved wait, and run only if no other worker took them back meanwhile")
    func settleAfterFailover() async throws {
        let redis = try await TestServers.freshRedis()
        let (claimer, conn) = Parts.claimer(redis, Parts.config(ManualClock()))
        try await Parts.enqueue(conn, ["s1", "s2", "s3"])
        let claimed = try await claimer.claim(count: 3)
        #expect(try Parts.ids(claimed) == ["s1", "s2", "s3"])
        // Another worker had finished s2 on the old master: its replay took the claim back.
        _ = try await conn.run { s in try s.pipeline(KombuLayout.ackCommands(deliveryTag: "s2")) }
        #expect(try Parts.ids(await claimer.settle(claimed, sinceMasterChange: nil)) == ["s1", "s2", "s3"])  // no failover: no look
        #expect(try Parts.ids(await claimer.settle(claimed, sinceMasterChange: 30)) == ["s1", "s2", "s3"])   // long ago
        // 0.3 s after the move the look waits ~1.7 s more: a replay that takes s3 back meanwhile counts.
        let settling = Task { try Parts.ids(await claimer.settle(claimed, sinceMasterChange: 0.3)) }
        try await Task.sleep(for: .milliseconds(100))
        _ = try await conn.run { s in try s.pipeline(KombuLayout.ackCommands(deliveryTag: "s3")) }
        #expect(try await settling.value == ["s1"])
    }

    @Test("what a claim whose reply was lost took is taken back by the next call")
    func lostReply() async throws {
        let redis = try await TestServers.freshRedis()
        let (claimer, conn) = Parts.claimer(redis, Parts.config(ManualClock()))
        try await Parts.enqueue(conn, ["lost1", "lost2"])
        // A claim that ran on the server but whose reply never reached the worker.
        let key = FlowKitKeys.claim("test-lost")
        let cmd = KombuLayout.claimCommand(queues: ["parts"], count: 2, now: 1_800_000_000, claimKey: key)
        _ = try await conn.run { s in try s.command(cmd).orThrow() }
        claimer.state.noteUnanswered([key])
        let back = try Parts.ids(try await claimer.claim(count: 2))
        #expect(Set(back) == ["lost1", "lost2"])
        #expect(try await Parts.waiting(conn).isEmpty)
    }

    @Test("visibility follows the injected clock: refreshed claims stay, a dead worker's are restored past the timeout")
    func visibility() async throws {
        let redis = try await TestServers.freshRedis()
        let clock = ManualClock()
        let (claimer, conn) = Parts.claimer(redis, Parts.config(clock, visibility: 60))
        try await Parts.enqueue(conn, ["live", "dead"])
        _ = try await claimer.claim(count: 2)
        // 61 s later: the live worker refreshes its claim of `live` in the same pipeline that restores.
        clock.advance(by: 61)
        _ = try await conn.run { s in try s.pipeline(claimer.visibilityCommands(running: ["live"])) }
        #expect(try await Parts.claimed(conn, "live"))
        #expect(try await !Parts.claimed(conn, "dead"))
        #expect(try await Parts.waiting(conn) == ["dead"])
        // Without refreshes, `live` goes back once its claim is older than the timeout.
        clock.advance(by: 30)
        _ = try await conn.run { s in try s.pipeline(claimer.visibilityCommands(running: [])) }
        #expect(try await Parts.claimed(conn, "live"))
        clock.advance(by: 31)
        _ = try await conn.run { s in try s.pipeline(claimer.visibilityCommands(running: [])) }
        #expect(try await !Parts.claimed(conn, "live"))
    }

    @Test("a hand-back is counted, kept visible while it waits, then put behind every message waiting; a drain takes the waiting ones")
    func handBack() async throws {
        let redis = try await TestServers.freshRedis()
        let (claimer, conn) = Parts.claimer(redis, Parts.config(ManualClock()))
        try await Parts.enqueue(conn, ["other-version", "a", "b"])
        _ = try await claimer.claim(count: 1)
        let counts = Counter()
        let times = await claimer.handBack(messageId: "other-version", tag: "other-version") { counts.add($0) }
        #expect(times == 1 && counts.values == [1])
        // Waiting to be handed back: still claimed, and refreshed by the heartbeat's commands.
        #expect(claimer.visibilityCommands(running: []).contains { $0.last == "other-version" })
        for _ in 0..<50 where try await Parts.claimed(conn, "other-version") { try await Task.sleep(for: .milliseconds(20)) }
        // Queues are taken from the right: put at the left end, it comes after `a` and `b`.
        #expect(try await Parts.waiting(conn) == ["other-version", "b", "a"])
        _ = try await claimer.claim(count: 1)
        let again = await claimer.handBack(messageId: "other-version", tag: "other-version") { _ in }
        #expect(again == 2)
        // A drain before the wait ends owns the pending hand-back and gives it back itself.
        #expect(claimer.takePendingHandBacks() == ["other-version"])
    }

}

final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var seen: [Int] = []
    func add(_ n: Int) { lock.withLock { seen.append(n) } }
    var values: [Int] { lock.withLock { seen } }
}

@Suite("Worker parts: executor")
struct ExecutorTests {
    static func run(_ body: @escaping @Sendable (TaskContext) async throws -> JSONValue?, timeout: Double? = nil,
                    cancelAfter: Double? = nil) async -> Executor.Outcome {
        let flow = Flow("exec") { f in _ = f.task("t") { ctx in try await body(ctx) } }
        let executor = Executor(concurrency: 1, home: NSTemporaryDirectory(), branchTargets: [:])
        let entry = executor.inFlight.add(messageId: "m", deliveryTag: "m", runId: "r", taskId: "t", tryNumber: 1)
        let ctx = TaskContext(flowId: "exec", runId: "r", taskId: "t", tryNumber: 1, logicalDate: Date(), dataIntervalStart: Date(),
                              dataIntervalEnd: Date(), params: [:], upstream: [:], log: TaskLogger { entry.log($0) },
                              isCancelled: { entry.isCancelled })
        if let cancelAfter {
            Task { try await Task.sleep(for: .milliseconds(Int(cancelAfter * 1000))); executor.cancel(messageIds: ["m"]) }
        }
        return await executor.execute(flow.tasks[0], ctx, timeout: timeout, entry: entry)
    }

    @Test("a try's body becomes its outcome: a value, a skip, a sensor's 'not yet', an error")
    func outcomes() async {
        #expect(await Self.run { _ in ["n": 1] } == .success(["n": 1]))
        #expect(await Self.run { _ in nil } == .success(nil))
        #expect(await Self.run { _ in throw TaskSkipped("nothing new") } == .skipped("nothing new"))
        #expect(await Self.run { _ in throw SensorNotReady(reason: "file not there") } == .notReady("file not there"))
        #expect(await Self.run { _ in throw TaskError("boom") } == .failure("boom"))
    }

    @Test("the execution timeout fails the try and stops its body; a cancelled run's try ends cancelled")
    func timeoutAndCancel() async {
        let stopped = Counter()
        let timedOut = await Self.run({ _ in
            do { try await Task.sleep(for: .seconds(30)) } catch { stopped.add(1); throw error }
            return nil
        }, timeout: 0.2)
        #expect(timedOut == .failure("timed out after 0.2s (execution timeout)"))
        for _ in 0..<100 where stopped.values.isEmpty { try? await Task.sleep(for: .milliseconds(10)) }
        #expect(stopped.values == [1])
        let cancelled = await Self.run({ _ in try await Task.sleep(for: .seconds(30)); return nil }, cancelAfter: 0.1)
        #expect(cancelled == .failure("cancelled: the run was cancelled"))
    }

    @Test("the slot gate: no more than `concurrency` messages are handled at once; a released slot lets the next in")
    func slots() async throws {
        let executor = Executor(concurrency: 2, home: NSTemporaryDirectory(), branchTargets: [:])
        let gate = Gate()
        #expect(await executor.waitForSlots() == 2)
        executor.inSlot { await gate.wait() }
        executor.inSlot { await gate.wait() }
        #expect(executor.busy)
        let third = Task { await executor.waitForSlots() }
        try await Task.sleep(for: .milliseconds(100))
        gate.open()
        #expect(await third.value >= 1)
        for _ in 0..<100 where executor.busy { try await Task.sleep(for: .milliseconds(10)) }
        #expect(!executor.busy)
    }
}

final class Gate: @unchecked Sendable {
    private let lock = NSLock()
    private var opened = false
    private var waiters: [CheckedContinuation<Void, Never>] = []
    func wait() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now: Bool = lock.withLock { if opened { return true }; waiters.append(c); return false }
            if now { c.resume() }
        }
    }
    func open() {
        let ws: [CheckedContinuation<Void, Never>] = lock.withLock { opened = true; defer { waiters = [] }; return waiters }
        ws.forEach { $0.resume() }
    }
}

@Suite("Worker parts: reporter", .serialized)
struct ReporterTests {
    static func reporter(_ redis: RedisConfig, _ clock: ManualClock, keepAllReports: Bool = false) -> (Reporter, RedisConnection) {
        let conn = RedisConnection(redis, label: "reporter")
        let log = Logger(label: "parts")
        return (Reporter(config: Parts.config(clock), redis: conn, logger: log, retry: Retry(logger: log), keepAllReports: keepAllReports), conn)
    }

    static func events(_ conn: RedisConnection) async throws -> [WorkerEvent] {
        let reply = try await conn.run { s in try s.command(["XRANGE", FlowKitKeys.events, "-", "+"]).orThrow() }
        return try (reply.array ?? []).compactMap { entry -> WorkerEvent? in
            guard let fields = entry.array?.last?.array, let json = fields.last?.string else { return nil }
            return try WorkerEvent.decode(json)
        }
    }

    @Test("an outcome's events, its Celery result, its result for downstream tasks and its acknowledgement land together")
    func finish() async throws {
        let redis = try await TestServers.freshRedis()
        let clock = ManualClock()
        let (reporter, conn) = Self.reporter(redis, clock)
        try await Parts.enqueue(conn, ["done"])
        _ = try await conn.run { s in try s.command(KombuLayout.claimCommand(queues: ["parts"], count: 1, now: 1)).orThrow() }
        #expect(try await Parts.claimed(conn, "done"))
        let ok = WorkerEvent(kind: .succeeded, worker: "parts-worker", at: clock.now(), messageId: "done", runId: "r1", taskId: "t1",
                             tryNumber: 1, result: ["rows": 3])
        await reporter.finish(tag: "done", taskId: "done", events: [ok], result: CeleryResult.success(taskId: "done", result: ["rows": 3]))
        #expect(try await !Parts.claimed(conn, "done"))
        let got = try await Self.events(conn)
        #expect(got.map(\.kind) == [.succeeded] && got.first?.at == clock.now().timeIntervalSince1970)
        let stored = try await conn.run { s in
            [try s.command(["GET", FlowKitKeys.result("r1", "t1")]).orThrow().string, try s.command(["EXISTS", CeleryResult.key("done")]).orThrow().int.map(String.init)]
        }
        #expect(stored == ["{\"rows\":3}", "1"])
    }

    @Test("after a Redis failover, the reports the new master lacks are sent again and their messages taken back; the others are not")
    func replayLost() async throws {
        let redis = try await TestServers.freshRedis()
        let clock = ManualClock()
        let (reporter, conn) = Self.reporter(redis, clock, keepAllReports: true)  // a single server: as if it failed over
        try await Parts.enqueue(conn, ["kept", "queued", "claimed"])
        let reply = try await conn.run { s in try s.command(KombuLayout.claimCommand(queues: ["parts"], count: 3, now: 1)).orThrow() }
        let raws = Dictionary(uniqueKeysWithValues: try KombuLayout.claimed(reply).messages.map { (try CeleryMessage.decode($0.raw).id, $0.raw) })
        for id in ["kept", "queued", "claimed"] {
            let ok = WorkerEvent(kind: .succeeded, worker: "parts-worker", at: clock.now(), messageId: id, runId: "r1", taskId: id, tryNumber: 1)
            await reporter.finish(tag: id, taskId: id, events: [ok], result: nil, raw: raws[id])
        }
        let sent = reporter.sent.all
        #expect(sent.count == 3)
        // The new master got the first report only: the second's message is queued again (its
        // claim was lost too), the third's claimed again (by a worker on the new master).
        _ = try await conn.run { s in
            try s.pipeline([["XDEL", FlowKitKeys.events, sent[1].entryId, sent[2].entryId], ["RPUSH", "parts", raws["queued"]!],
                            ["HSET", KombuLayout.unacked, "claimed", "[\(raws["claimed"]!), \"\", \"parts\"]"], ["ZADD", KombuLayout.unackedIndex, "2", "claimed"]])
        }
        try await conn.run { s in reporter.replayLost(on: s) }
        let events = try await Self.events(conn)
        #expect(events.compactMap(\.messageId) == ["kept", "queued", "claimed"], "\(events.compactMap(\.messageId))")
        #expect(try await Parts.waiting(conn).isEmpty)
        #expect(try await !Parts.claimed(conn, "claimed"))
        // Nothing is lost any more: a second look sends nothing.
        try await conn.run { s in reporter.replayLost(on: s) }
        #expect(try await Self.events(conn).count == 3)
        #expect(!reporter.sent.pending)
        // Without Sentinel no report is kept: nothing costs a worker on a single Redis.
        let (single, _) = Self.reporter(redis, clock)
        await single.finish(tag: "x", taskId: "x", events: [WorkerEvent(kind: .succeeded, worker: "w", at: clock.now(), messageId: "x")], result: nil, raw: "{}")
        #expect(single.sent.all.isEmpty)
    }

    @Test("a heartbeat stamps the clock's time, keeps the worker alive, refreshes claims and finds cancelled tries")
    func heartbeat() async throws {
        let redis = try await TestServers.freshRedis()
        let clock = ManualClock()
        let (reporter, conn) = Self.reporter(redis, clock)
        let inFlight = InFlight()
        let a = inFlight.add(messageId: "ma", deliveryTag: "ma", runId: "r", taskId: "a", tryNumber: 1)
        let b = inFlight.add(messageId: "mb", deliveryTag: "mb", runId: "r", taskId: "b", tryNumber: 1)
        _ = try await conn.run { s in try s.command(["SET", FlowKitKeys.cancel("mb"), "1"]).orThrow() }
        let cancelled = await reporter.heartbeat(info: ["host": "h"], running: [a, b],
                                                 visibility: KombuLayout.refreshClaimCommands(tags: ["ma", "mb"], now: clock.now().timeIntervalSince1970)
                                                     + [KombuLayout.restoreCommand(claimedBefore: 0, limit: 1)])
        #expect(cancelled == ["mb"])
        let beat = try await Self.events(conn)
        #expect(beat.map(\.kind) == [.heartbeat] && beat.first?.at == clock.now().timeIntervalSince1970)
        #expect(Set(beat.first?.running ?? []) == ["ma", "mb"])
        let alive = try await conn.run { s in try s.command(["TTL", FlowKitKeys.workerAlive("parts-worker")]).orThrow().int }
        #expect((alive ?? 0) > 0 && (alive ?? 0) <= 6)
    }

    @Test("running tries' log lines are shipped masked, stamped with the clock, and a dead letter is kept with why")
    func logsAndDeadLetters() async throws {
        let redis = try await TestServers.freshRedis()
        let clock = ManualClock()
        let (reporter, conn) = Self.reporter(redis, clock)
        let inFlight = InFlight()
        let e = inFlight.add(messageId: "ml", deliveryTag: "ml", runId: "r", taskId: "load", tryNumber: 2)
        e.log("connecting to postgres://etl:s3cret@db/x")
        await reporter.shipLogs(inFlight.all, masker: SecretMasker(connections: ["db": "postgres://etl:s3cret@db/x"]))
        let logs = try await Self.events(conn)
        #expect(logs.map(\.kind) == [.log] && logs.first?.at == clock.now().timeIntervalSince1970)
        #expect(logs.first?.lines?.first?.contains("s3cret") == false)
        await reporter.deadLetter(raw: "{not json", tag: "", reason: "not a Celery message", celeryId: nil)
        let dead = try await conn.run { s in try s.command(["LRANGE", FlowKitKeys.deadLetter, "0", "-1"]).orThrow().array ?? [] }
        #expect(dead.count == 1 && dead.first?.string?.contains("not a Celery message") == true)
    }
}
