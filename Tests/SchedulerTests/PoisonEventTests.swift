import CeleryProtocol
import FlowKit
import FlowKitTesting
import Foundation
import Testing
@testable import Scheduler
import RedisClient

@Suite("Poison events", .serialized)
struct PoisonEventTests {
    func event(_ kind: WorkerEvent.Kind, _ m: CeleryMessage, _ h: Harness, tryNumber: Int? = nil, lines: [String]? = nil) throws -> WorkerEvent {
        let inv = try h.invocation(m)
        var e = WorkerEvent(kind: kind, worker: "w1", at: h.clock.now(), messageId: m.id, runId: inv.runId, taskId: inv.taskId,
                            tryNumber: tryNumber ?? inv.tryNumber)
        e.lines = lines
        return e
    }

    @Test("a log line with a NUL byte is stored (as U+FFFD) and does not fail the outcome read beside it")
    func nulInLogLine() async throws {
        let h = try await Harness.make([diamond])
        let run = try await h.trigger("diamond")
        let a = try #require(try await h.take().first)
        let batch = [try event(.log, a, h, lines: ["a\u{0}b", "plain"]), try event(.succeeded, a, h)]
        _ = try await h.daemon.eventConsumer.apply(batch.map { SchedulerBroker.StreamEntry(id: "0-1", event: $0) }, deferAck: true)
        #expect(try await h.states(run)["a"] == "success")
        #expect(Set(try await h.queued().map { try h.invocation($0).taskId }) == ["b", "c"])
        let lines = try await h.store.logs(runId: run, taskId: "a", tryNumber: 1, after: 0).lines.map(\.line)
        #expect(lines == ["a\u{FFFD}b", "plain"])
    }

    @Test("an event the database refuses on its own is dead-lettered with its reason; the events beside it apply")
    func poisonIsolated() async throws {
        let h = try await Harness.make([diamond])
        let run = try await h.trigger("diamond")
        let a = try #require(try await h.take().first)
        // A try number past PostgreSQL's int range: well-formed JSON, refused by the database (22003).
        let poison = try event(.log, a, h, tryNumber: 5_000_000_000, lines: ["from nowhere"])
        let batch = [poison, try event(.started, a, h), try event(.succeeded, a, h)]
        _ = try await h.daemon.eventConsumer.apply(batch.map { SchedulerBroker.StreamEntry(id: "0-1", event: $0) }, deferAck: true)
        #expect(try await h.states(run)["a"] == "success")
        let dead = try await h.redis.run { s in try s.command(["LRANGE", FlowKitKeys.deadLetter, "0", "-1"]).array?.compactMap(\.string) ?? [] }
        #expect(dead.count == 1)
        let entry = try JSONValue.parse(try #require(dead.first))
        #expect(entry["kind"]?.stringValue == "event")
        #expect(entry["reason"]?.stringValue?.contains("22003") == true)
        #expect(entry["event"]?.stringValue?.contains("5000000000") == true)
    }

    @Test("log lines past 16 KiB are cut, saying how much was dropped")
    func longLinesCut() async throws {
        let h = try await Harness.make([diamond])
        let run = try await h.trigger("diamond")
        let a = try #require(try await h.take().first)
        let long = String(repeating: "x", count: 100_000)
        _ = try await h.daemon.eventConsumer.apply([SchedulerBroker.StreamEntry(id: "0-1", event: try event(.log, a, h, lines: [long]))], deferAck: true)
        let line = try #require(try await h.store.logs(runId: run, taskId: "a", tryNumber: 1, after: 0).lines.first?.line)
        #expect(line.hasPrefix(String(repeating: "x", count: 16 * 1024)))
        #expect(line.hasSuffix("[line cut: \(100_000 - 16 * 1024) more bytes]"))
    }

    @Test("an outcome for a run the database does not have is dead-lettered and logged, not dropped in silence")
    func unknownRunOutcome() async throws {
        let h = try await Harness.make([diamond])
        let run = try await h.trigger("diamond")
        let a = try #require(try await h.take().first)
        var stray = try event(.succeeded, a, h)
        stray.runId = "manual__2020-01-01T00:00:00Z__gone"
        let batch = [stray, try event(.succeeded, a, h)]
        _ = try await h.daemon.eventConsumer.apply(batch.map { SchedulerBroker.StreamEntry(id: "0-1", event: $0) }, deferAck: true)
        #expect(try await h.states(run)["a"] == "success")
        let dead = try await h.redis.run { s in try s.command(["LRANGE", FlowKitKeys.deadLetter, "0", "-1"]).array?.compactMap(\.string) ?? [] }
        #expect(dead.count == 1)
        let entry = try JSONValue.parse(try #require(dead.first))
        #expect(entry["reason"]?.stringValue == "a succeeded event of unknown run `manual__2020-01-01T00:00:00Z__gone`: the database has no such run")
    }

    @Test("a stream entry that is not an event is dead-lettered as it was, and acknowledged")
    func undecodableEntry() async throws {
        let h = try await Harness.make([diamond])
        let run = try await h.trigger("diamond")
        let a = try #require(try await h.take().first)
        _ = try await h.redis.run { s in try s.command(["XADD", FlowKitKeys.events, "*", "e", "{not an event"]).orThrow() }
        let good = try event(.succeeded, a, h)
        _ = try await h.redis.run { s in try s.command(good.xaddCommand()).orThrow() }
        try await eventually("both entries consumed", timeout: 20) {
            let n = try await h.daemon.eventConsumer.consume(pending: false, blockMillis: 100)
            let state = try await h.states(run)["a"]
            return n == 0 && state == "success"
        }
        _ = try await h.daemon.eventAcknowledger.runOnce()
        let dead = try await h.redis.run { s in try s.command(["LRANGE", FlowKitKeys.deadLetter, "0", "-1"]).array?.compactMap(\.string) ?? [] }
        #expect(dead.count == 1)
        let entry = try JSONValue.parse(try #require(dead.first))
        #expect(entry["entry"] == "e={not an event")
        #expect(entry["reason"]?.stringValue?.hasSuffix("is not a FlowKit event") == true)
        let pending = try await h.redis.run { s in try s.command(["XPENDING", FlowKitKeys.events, FlowKitKeys.eventsGroup]).array?.first?.int }
        #expect(pending == 0)
    }

    @Test("a batch that fails because the database went away is applied again at once, not after the abandoned-event claim")
    func failedBatchRetriedAtOnce() async throws {
        var config = SchedulerConfig(name: "retry-scheduler")
        config.zombieThreshold = 300  // the claim of abandoned events would take 5 minutes
        let h = try await Harness.make([diamond], config: config)
        let run = try await h.trigger("diamond")
        let a = try #require(try await h.take().first)
        // Every write to the history fails as if the server were shutting down (57P03 counts as a lost connection).
        _ = try await h.sql("""
            CREATE FUNCTION going_away() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'the database system is shutting down' USING ERRCODE = '57P03'; END $$
            """)
        _ = try await h.sql("CREATE TRIGGER going_away BEFORE INSERT ON task_history FOR EACH STATEMENT EXECUTE FUNCTION going_away()")
        _ = try await h.redis.run { s in try s.command(["XGROUP", "CREATE", FlowKitKeys.events, FlowKitKeys.eventsGroup, "0", "MKSTREAM"]).orThrow() }
        let consumer = try #require(h.daemon.services().first { $0.duty is EventConsumer })
        let loop = Task { await consumer.loop() }
        try await Task.sleep(for: .milliseconds(300))  // past its first read of pending entries (none)
        defer { loop.cancel() }
        _ = try await h.redis.run { s in try s.command(try event(.succeeded, a, h).xaddCommand()).orThrow() }
        try await eventually("the batch read, failed and left pending", timeout: 20) {
            let pending = try await h.redis.run { s in try s.command(["XPENDING", FlowKitKeys.events, FlowKitKeys.eventsGroup]).array?.first?.int }
            return pending == 1
        }
        try await Task.sleep(for: .seconds(1))
        #expect(try await h.states(run)["a"] != "success")
        _ = try await h.sql("DROP TRIGGER going_away ON task_history")
        try await eventually("the pending batch applied", timeout: 10) { try await h.states(run)["a"] == "success" }
    }
}
