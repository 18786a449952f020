import CeleryProtocol
import FlowKit
import FlowKitTesting
import Foundation
import Testing
@testable import Scheduler
import PostgresClient

@Suite("Leader failover", .serialized)
struct LeaderTests {
    @Test("one scheduler holds the maintenance lock; when its session ends another takes it over")
    func failover() async throws {
        let h = try await Harness.make([diamond])
        let redis = try await TestServers.freshRedis()
        let a = SchedulerDaemon(databaseURL: h.url, redis: redis, flows: [diamond], config: SchedulerConfig(name: "a"))
        let b = SchedulerDaemon(databaseURL: h.url, redis: redis, flows: [diamond], config: SchedulerConfig(name: "b"))
        #expect(try await a.isLeader())
        #expect(try await b.isLeader() == false)
        #expect(try await a.isLeader())  // holding it is idempotent
        a.leader.connection.close()  // the leader's session ends (its process died)
        try await eventually("b to take over", timeout: 10) { try await b.isLeader() }
        #expect(try await a.isLeader() == false)
    }
}
