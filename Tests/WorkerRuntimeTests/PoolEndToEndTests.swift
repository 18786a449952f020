import FlowKit
import FlowKitTesting
import Flows
import Foundation
import Testing
@testable import WorkerRuntime
import Scheduler

@Suite("Pools end to end", .serialized)
struct PoolEndToEndTests {
    @Test("example_pool: two runs at once on four worker slots never have more than 2 tasks running; freed slots are taken at once, not at the next poll")
    func examplePool() async throws {
        // LiveSystem's pool admitter polls only every 60 s: the waves below must be started by
        // the NOTIFY of a freed slot, or the runs would take minutes.
        try await withSystem(workers: 2) { sys in
            let runs = [try await sys.trigger("example_pool", conf: ["seconds": 0.3]), try await sys.trigger("example_pool", conf: ["seconds": 0.3])]
            var intervals: [(Double, Double)] = []
            for run in runs {
                #expect(try await sys.waitForRun(run, timeout: 30) == "success")
                let tis = try await sys.store.taskInstances(runId: run)
                #expect(tis.count == 6 && tis.allSatisfy { $0.state == "success" && $0.pool == "example_pool" })
                for t in tis {
                    let started = try #require(t.result?["started"]?.doubleValue), ended = try #require(t.result?["ended"]?.doubleValue)
                    #expect(ended - started >= 0.29)
                    intervals.append((started, ended))
                }
            }
            // The most tasks running at one instant, from their own start and end times.
            var edges: [(at: Double, delta: Int)] = []
            for (start, end) in intervals { edges.append((start, 1)); edges.append((end, -1)) }
            edges.sort { a, b in a.at != b.at ? a.at < b.at : a.delta < b.delta }
            var running = 0, most = 0
            for e in edges { running += e.delta; most = max(most, running) }
            #expect(most == 2)
            let pool = try #require(try await sys.store.pools().first { $0.name == "example_pool" })
            #expect(pool.slots == 2 && pool.usedSlots == 0 && pool.waiting == 0)
        }
    }
}
