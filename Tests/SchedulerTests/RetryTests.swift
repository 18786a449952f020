import CeleryProtocol
import FlowKit
import FlowKitTesting
import Foundation
import Testing
@testable import Scheduler
import PostgresClient

@Suite("Retries", .serialized)
struct RetryTests {
    static let flaky = Flow("flaky", defaults: TaskOptions(retry: RetryPolicy(retries: 2, delay: .seconds(60), backoff: 2))) { f in
        _ = noop(f, "t")
    }

    @Test("a failed try with retries left waits for its delay, then runs again as a new try")
    func retryTiming() async throws {
        let h = try await Harness.make([Self.flaky])
        let run = try await h.trigger("flaky")
        let first = try await h.take()[0]
        try await h.report(first, .started)
        try await h.report(first, .failed, error: "try 1 failed")
        let ti = try await h.store.taskInstances(runId: run)[0]
        #expect(ti.state == "up_for_retry")
        #expect(ti.nextAttemptAt == Harness.start.addingTimeInterval(60))
        h.clock.advance(by: 59)
        try await h.broker.perform(try await h.store.queueDueRetries(now: h.clock.now()))
        #expect(try await h.queued().isEmpty)
        h.clock.advance(by: 1)
        try await h.broker.perform(try await h.store.queueDueRetries(now: h.clock.now()))
        let second = try #require(try await h.take().first)
        #expect(try h.invocation(second).tryNumber == 2)
        #expect(second.id != first.id)
        try await h.report(second, .failed, error: "try 2 failed")
        // Exponential: 60 × 2 after try 2.
        #expect(try await h.store.taskInstances(runId: run)[0].nextAttemptAt == h.clock.now().addingTimeInterval(120))
        h.clock.advance(by: 120)
        try await h.broker.perform(try await h.store.queueDueRetries(now: h.clock.now()))
        let third = try #require(try await h.take().first)
        try await h.report(third, .failed, error: "try 3 failed")
        let final = try await h.store.taskInstances(runId: run)[0]
        #expect(final.state == "failed")
        #expect(final.tries.map(\.error) == ["try 1 failed", "try 2 failed", "try 3 failed"])
        #expect(try await h.runState(run) == "failed")
    }

    @Test("a late report from an earlier try is recorded in the history but changes nothing")
    func lateReport() async throws {
        let h = try await Harness.make([Self.flaky])
        let run = try await h.trigger("flaky")
        let first = try await h.take()[0]
        try await h.report(first, .failed, error: "x")
        h.clock.advance(by: 60)
        try await h.broker.perform(try await h.store.queueDueRetries(now: h.clock.now()))
        let second = try await h.take()[0]
        try await h.report(second, .started)
        try await h.report(first, .succeeded)  // the old try comes back
        #expect(try await h.states(run)["t"] == "running")
        let ignored = try await h.sql("SELECT count(*) AS n FROM task_history WHERE NOT applied AND try_number = 1")
        #expect(try ignored.first?.intOrNull("n") == 1)
        try await h.report(second, .succeeded)
        try await h.report(second, .succeeded)  // a duplicate delivery
        #expect(try await h.runState(run) == "success")
        let successes = try await h.sql("SELECT count(*) AS n FROM task_history WHERE to_state = 'success' AND applied")
        #expect(try successes.first?.intOrNull("n") == 1)
    }
}
