import CeleryProtocol
import FlowKit
import FlowKitTesting
import Foundation
import PostgresClient
import Testing
@testable import Scheduler

@Suite("Registration", .serialized)
struct RegistrationTests {
    /// One flow before and after a change: a task added.
    static let v1 = Flow("evolving") { f in _ = noop(f, "a") }
    static let v2 = Flow("evolving") { f in
        let a = noop(f, "a")
        a --> noop(f, "b")
    }

    @Test("a changed flow gets a new version; runs keep the version they started with; a removed flow becomes inactive")
    func versions() async throws {
        let (v1, v2) = (Self.v1, Self.v2)
        let h = try await Harness.make([v1, hourly("other")])
        let run = try await h.trigger("evolving")
        #expect(try await h.store.registerFlows([v1, hourly("other")], now: h.clock.now()).isEmpty)
        #expect(try await h.store.registerFlows([v2], now: h.clock.now()) == ["evolving"])
        let flow = try await h.store.flow("evolving")
        #expect(flow.version == 2)
        #expect(flow.definition?.tasks.map(\.id) == ["a", "b"])
        #expect(try await h.store.run(run).flowVersion == 1)
        #expect(try await h.store.flow("other").isActive == false)
        // The old run finishes under version 1: one task.
        try await h.succeedAll()
        #expect(try await h.runState(run) == "success")
    }

    @Test("rolling upgrade: a scheduler on the older binary neither rolls a flow back nor deactivates the newer one's flows; when the newer schedulers stop, the older version is current again")
    func rollingUpgrade() async throws {
        let (v1, v2) = (Self.v1, Self.v2)
        let fresh = Flow("only_new") { f in _ = noop(f, "a") }
        let h = try await Harness.make([v1])
        let now = h.clock.now()
        // The new binary's scheduler starts first, then an old one restarts mid-rollout.
        #expect(try await h.store.registerFlows([v2, fresh], reportedBy: "new-1", now: now) == ["evolving", "only_new"])
        #expect(try await h.store.registerFlows([v1], reportedBy: "old-1", now: now.addingTimeInterval(1)).isEmpty)
        #expect(try await h.store.flow("evolving").version == 2)
        #expect(try await h.store.flow("only_new").isActive)
        // The leader's periodic election agrees while new-1 lives.
        #expect(try await h.store.electFlowVersions(now: now.addingTimeInterval(5), scheduler: "old-1").isEmpty)
        #expect(try await h.store.flow("evolving").version == 2)
        // new-1 stopped (a rollback): once its heartbeat is older than the window, the flows follow what still runs.
        let later = now.addingTimeInterval(SchedulerStore.carrierWindow + 2)
        let switched = try await h.store.electFlowVersions(now: later, scheduler: "old-1")
        #expect(switched == [.init(flowId: "evolving", from: 2, to: 1), .init(flowId: "only_new", from: 1, to: nil)])
        #expect(try await h.store.flow("evolving").version == 1)
        #expect(try await h.store.flow("only_new").isActive == false)
        let run = try await h.store.createRun(flowId: "evolving", kind: "manual", conf: [:], logicalDate: nil, now: later)
        #expect(run.flowVersion == 1)
        await #expect(throws: StateConflict.self) {
            try await h.store.createRun(flowId: "only_new", kind: "manual", conf: [:], logicalDate: nil, now: later)
        }
        // The new binary comes back: its versions are current again.
        try await h.store.registerFlows([v2, fresh], reportedBy: "new-2", now: later.addingTimeInterval(1))
        #expect(try await h.store.flow("evolving").version == 2)
        #expect(try await h.store.flow("only_new").isActive)
    }

    @Test("eight schedulers of two binaries register at once: one version per definition, the newer current, every flow of either active")
    func concurrentRegistration() async throws {
        let (v1, v2) = (Self.v1, Self.v2)
        // The old binary was deployed first, as in a rolling upgrade: v1 is version 1. (Were both
        // new, whichever registered first would get the lower number, and the other would be current.)
        let h = try await Harness.make([v1, hourly("base")])
        let now = h.clock.now()
        try await withThrowingTaskGroup(of: Void.self) { g in
            for i in 0..<8 {
                g.addTask {
                    let store = SchedulerStore(db: PGPool(h.url, size: 1))
                    let flows = i % 2 == 0 ? [v1, hourly("base")] : [v2, hourly("base"), hourly("extra")]
                    try await store.registerFlows(flows, reportedBy: "s\(i)", now: now)
                }
            }
            try await g.waitForAll()
        }
        let versions = try await PGConnection(h.url, label: "t").run { s in
            try s.query("SELECT version FROM flow_versions WHERE flow_id = 'evolving' ORDER BY version").all.map { try $0.int("version") }
        }
        #expect(versions == [1, 2])
        let evolving = try await h.store.flow("evolving")
        let expected = try FlowDefinition(v2).contentHash()
        #expect(evolving.hash == expected)
        #expect(try await h.store.flows().filter(\.isActive).map(\.flowId) == ["base", "evolving", "extra"])
    }
}
