import CeleryProtocol
import FlowKit
import FlowKitTesting
import Foundation
import PostgresClient
import Testing
@testable import Scheduler

@Suite("Backfill", .serialized)
struct BackfillTests {
    @Test("a backfill makes one run per tick in the range, oldest first, and never doubles a tick")
    func backfill() async throws {
        let h = try await Harness.make([hourly("h"), diamond])
        let from = Harness.start.addingTimeInterval(-3 * 3600), to = Harness.start
        let runs = try await h.store.createBackfillRuns(flowId: "h", from: from, to: to, conf: [:])
        #expect(runs.map(\.logicalDate) == (0...3).map { from.addingTimeInterval(Double($0) * 3600) })
        #expect(runs.allSatisfy { $0.triggerKind == "backfill" && $0.state == "queued" })
        #expect(runs[1].dataIntervalStart == runs[0].logicalDate)
        #expect(try await h.store.createBackfillRuns(flowId: "h", from: from, to: to, conf: [:]).isEmpty)
        await #expect(throws: StateConflict.self) { _ = try await h.store.createBackfillRuns(flowId: "h", from: to, to: from, conf: [:]) }
        await #expect(throws: StateConflict.self) { _ = try await h.store.createBackfillRuns(flowId: "diamond", from: from, to: to, conf: [:]) }
        await #expect(throws: NotFound.self) { _ = try await h.store.createBackfillRuns(flowId: "nope", from: from, to: to, conf: [:]) }
    }
}
