import CeleryProtocol
import FlowKit
import FlowKitTesting
import Foundation
import PostgresClient
import Testing
@testable import Scheduler

@Suite("Registration", .serialized)
struct RegistrationTests {
    @Test("a changed flow gets a new version; runs keep the version they started with; a removed flow becomes inactive")
    func versions() async throws {
        let v1 = Flow("evolving") { f in _ = noop(f, "a") }
        let v2 = Flow("evolving") { f in
            let a = noop(f, "a")
            a --> noop(f, "b")
        }
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
}
