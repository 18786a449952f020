import CeleryProtocol
import FlowKit
import FlowKitTesting
import Foundation
import PostgresClient
import Testing
@testable import Scheduler

let slaFlow = Flow("sla", deadline: .afterStart(.seconds(60)), notify: Notifications(onDeadlineMiss: [.webhook("alerts")])) { f in
    _ = noop(f, "t")
}
let dateSlaFlow = Flow("date_sla", deadline: .afterLogicalDate(.seconds(3600))) { f in _ = noop(f, "t") }

@Suite("Run deadlines", .serialized)
struct DeadlineTests {
    @Test("a run unfinished at its deadline misses it once, with one onDeadlineMiss notification, even with two schedulers deciding at once; one that ended in time meets it")
    func missedOnce() async throws {
        let h = try await Harness.make([slaFlow, dateSlaFlow])
        let late = try await h.trigger("sla")
        let onTime = try await h.trigger("sla")
        #expect(try await h.store.run(late).deadlineAt == Harness.start.addingTimeInterval(60))
        // One run ends in time; the other is still running at its deadline.
        let msgs = try await h.take()
        let inv = try msgs.map { try h.invocation($0) }
        try await h.report(msgs[inv.firstIndex { $0.runId == onTime }!], .succeeded)
        h.clock.advance(by: 59)
        #expect(try await h.store.decideDeadlines(now: h.clock.now()).isEmpty)
        h.clock.advance(by: 2)
        let other = SchedulerStore(db: PGPool(h.url, size: 2))
        async let a = h.store.decideDeadlines(now: h.clock.now())
        async let b = other.decideDeadlines(now: h.clock.now())
        let (x, y) = try await (a, b)
        #expect(x + y == [late])
        #expect(try await h.store.decideDeadlines(now: h.clock.now()).isEmpty)
        #expect(try await h.store.run(late).deadlineState == "missed")
        #expect(try await h.store.run(onTime).deadlineState == "met")
        let notes = try await h.store.notifications()
        #expect(notes.count == 1 && notes[0].event == "on_deadline_miss" && notes[0].runId == late)
        // After its logical date: a manual run with an old logical date is due an hour after it.
        let old = try await h.store.createRun(flowId: "date_sla", kind: "manual", conf: [:], logicalDate: Harness.start.addingTimeInterval(-7200),
                                              now: h.clock.now())
        #expect(old.deadlineAt == Harness.start.addingTimeInterval(-3600))
        #expect(try await h.store.decideDeadlines(now: h.clock.now()) == [old.runId])
    }
}
