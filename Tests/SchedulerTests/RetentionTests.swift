import CeleryProtocol
import FlowKit
import FlowKitTesting
import Foundation
import PostgresClient
import Testing
@testable import Scheduler

@Suite("Retention (db clean)", .serialized)
struct RetentionTests {
    @Test("finished runs older than the cutoff go with everything under them; newer and unfinished runs stay; two cleaners delete each run once")
    func clean() async throws {
        let flow = Flow("kept", maxActiveRuns: 50) { f in noop(f, "a") --> noop(f, "b") --> noop(f, "c") }
        let h = try await Harness.make([flow])
        var runs: [String] = []
        for _ in 0..<6 { runs.append(try await h.trigger("kept")) }
        for _ in 0..<3 { _ = try await h.succeedAll() }
        for r in runs { #expect(try await h.runState(r) == "success") }
        let old = Array(runs.prefix(4))
        let pks = try await h.sql("SELECT id FROM runs WHERE run_id = ANY($1::text[])", [old]).map { try $0.int("id") }
        _ = try await h.sql("UPDATE runs SET ended_at = now() - interval '40 days' WHERE id = ANY($1::bigint[])", [pks])
        _ = try await h.sql("INSERT INTO task_logs (run_pk, task_id, try_number, at, line) SELECT id, 'a', 1, now(), 'a line' FROM runs WHERE id = ANY($1::bigint[])", [pks])
        _ = try await h.sql("""
            WITH n AS (INSERT INTO notifications (delivery_key, event, notifier, flow_id, run_pk, run_id, state, next_attempt_at, created_at)
                       SELECT run_id || '/n', 'on_run_success', 'webhook:x', flow_id, id, run_id, 'success', now(), now() FROM runs WHERE id = $1 RETURNING id)
            INSERT INTO notification_attempts (notification_id, at, ok, seconds) SELECT id, now(), true, 0.1 FROM n
            """, [pks[0]])
        // An old run still queued (never started) is not finished: it stays.
        let queued = try await h.store.createRun(flowId: "kept", kind: "manual", conf: [:], logicalDate: nil, now: h.clock.now())
        _ = try await h.sql("UPDATE runs SET created_at = now() - interval '40 days' WHERE run_id = $1", [queued.runId])

        let cutoff = Date().addingTimeInterval(-30 * 86400)
        let dry = try await h.store.cleanHistory(before: cutoff, dryRun: true)
        #expect(dry.runs == 4 && dry.taskInstances == 12 && dry.logLines == 4)
        #expect(try await h.store.cleanHistory(before: cutoff, flows: ["other"], dryRun: true).runs == 0)

        let other = SchedulerStore(db: PGPool(h.url, size: 1))
        async let x = h.store.cleanHistory(before: cutoff, batch: 1, pause: .zero)
        async let y = other.cleanHistory(before: cutoff, batch: 1, pause: .zero)
        let (rx, ry) = try await (x, y)
        #expect(rx.runs + ry.runs == 4 && rx.taskInstances + ry.taskInstances == 12)

        let left = try await h.sql("SELECT run_id FROM runs ORDER BY id").map { try $0.string("run_id") }
        #expect(left == Array(runs.suffix(2)) + [queued.runId])
        for table in ["task_instances", "task_tries", "task_history", "task_logs"] {
            let n = try await h.sql("SELECT count(*) AS n FROM \(table) WHERE run_pk = ANY($1::bigint[])", [pks]).first!.int("n")
            #expect(n == 0, "\(table) still has rows of deleted runs")
        }
        #expect(try await h.sql("SELECT count(*) AS n FROM notifications").first!.int("n") == 0)
        #expect(try await h.sql("SELECT count(*) AS n FROM notification_attempts").first!.int("n") == 0)
        #expect(try await h.sql("SELECT count(*) AS n FROM task_instances").first!.int("n") == 6)
        #expect(try await h.store.cleanHistory(before: cutoff).runs == 0)
    }

    @Test("the retention policy: the leader's cleaner deletes what the policy says, and nothing without one")
    func policy() async throws {
        let flow = Flow("policy", maxActiveRuns: 10) { f in _ = noop(f, "a") }
        let h = try await Harness.make([flow])
        let runs = [try await h.trigger("policy"), try await h.trigger("policy")]
        _ = try await h.succeedAll()
        // The harness's clock, not the database's: the cleaner's cutoff is the scheduler's now.
        _ = try await h.sql("UPDATE runs SET ended_at = $2 WHERE run_id = $1", [runs[0], h.clock.now().addingTimeInterval(-3 * 86400)])
        _ = try await h.sql("UPDATE runs SET ended_at = $2 WHERE run_id = $1", [runs[1], h.clock.now()])
        var off = RetentionCleaner.Config()
        #expect(try await RetentionCleaner(context: h.daemon.context, config: off).runOnce() == 3600)
        #expect(try await h.sql("SELECT count(*) AS n FROM runs").first!.int("n") == 2)
        off.keep = 2 * 86400
        _ = try await RetentionCleaner(context: h.daemon.context, config: off).runOnce()
        #expect(try await h.sql("SELECT run_id FROM runs").map { try $0.string("run_id") } == [runs[1]])
        var bad = SchedulerConfig(name: "x")
        bad.retention = -1
        #expect(throws: SchedulerConfigError.self) { try bad.validate() }
    }
}
