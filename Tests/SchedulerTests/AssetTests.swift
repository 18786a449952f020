import CeleryProtocol
import FlowKit
import FlowKitTesting
import Foundation
import PostgresClient
import Testing
@testable import Scheduler

let producer = Flow("producer") { f in f.task("make", outlets: ["demo://a"]) { _ in nil } }
let consumerAB = Flow("consumer_ab", assets: ["demo://a", "demo://b"]) { f in _ = noop(f, "t") }
let consumerA = Flow("consumer_a", assets: ["demo://a"]) { f in _ = noop(f, "t") }
/// Airflow's AssetOrTimeSchedule: hourly, or whenever demo://a has an event.
let hourlyOrAsset = Flow("hourly_or_asset", schedule: .cron("0 * * * *"), assets: ["demo://a"]) { f in _ = noop(f, "t") }

@Suite("Assets", .serialized)
struct AssetTests {
    func runs(_ h: Harness, _ flow: String) async throws -> [PGRow] {
        try await h.sql("SELECT run_id, trigger_kind, triggering_events::text AS events FROM runs WHERE flow_id = $1 ORDER BY id", [flow])
    }

    @Test("an outlet's success records an event in its transaction and starts each consumer once; a flow on two assets waits for both")
    func outletsAndConsumers() async throws {
        let h = try await Harness.make([producer, consumerAB, consumerA])
        let run = try await h.trigger("producer")
        try await h.report(try await h.take()[0], .succeeded, result: ["rows": 7])
        let a = try await runs(h, "consumer_a")
        #expect(try a.count == 1 && a[0].stringOrNull("trigger_kind") == "asset")
        let events = try JSONValue.parse(a[0].string("events")).arrayValue ?? []
        #expect(events.count == 1 && events[0]["runId"]?.stringValue == run && events[0]["taskId"] == "make" && events[0]["extra"] == ["rows": 7])
        #expect(try await runs(h, "consumer_ab").isEmpty)  // demo://b has had no event yet
        _ = try await h.store.postAssetEvent(uri: "demo://b", extra: ["k": 1], now: h.clock.now())
        let ab = try await runs(h, "consumer_ab")
        #expect(ab.count == 1)
        #expect(try (try JSONValue.parse(ab[0].string("events")).arrayValue ?? []).compactMap { $0["uri"]?.stringValue } == ["demo://a", "demo://b"])
        await #expect(throws: BadRequest.self) { _ = try await h.store.postAssetEvent(uri: "nope", extra: [:], now: h.clock.now()) }
        // The lineage the assets page draws: what updates each asset and what it starts.
        let assets = Dictionary(uniqueKeysWithValues: try await h.store.assets().map { ($0.uri, $0) })
        let a2 = try #require(assets["demo://a"]), b = try #require(assets["demo://b"])
        #expect(a2.producers == ["producer"] && a2.producerTasks == ["producer.make"] && a2.sources.isEmpty)
        #expect(a2.consumers == ["consumer_a", "consumer_ab"] && a2.events == 1)
        #expect(b.producers.isEmpty && b.sources == ["api"] && b.consumers == ["consumer_ab"])
    }

    @Test("a flow on a cron schedule and an asset runs on either: a tick makes a scheduled run, an event an asset run")
    func cronOrAsset() async throws {
        let h = try await Harness.make([hourlyOrAsset])
        // The flow was registered at 06:00; its next tick is 07:00.
        h.clock.advance(by: 3600)
        #expect(try await h.store.createDueScheduledRuns(now: h.clock.now()).map(\.triggerKind) == ["scheduled"])
        _ = try await h.store.postAssetEvent(uri: "demo://a", extra: [:], now: h.clock.now())
        let kinds = try await h.sql("SELECT trigger_kind FROM runs WHERE flow_id = 'hourly_or_asset' ORDER BY id").map { try $0.string("trigger_kind") }
        #expect(kinds == ["scheduled", "asset"])
    }

    @Test("40 events posted at once through two schedulers' stores: each event starts exactly one consumer run, none is lost")
    func concurrentEvents() async throws {
        let h = try await Harness.make([producer, consumerA])
        let other = SchedulerStore(db: PGPool(h.url, size: 3))
        try await withThrowingTaskGroup(of: Void.self) { g in
            for i in 0..<40 {
                g.addTask { _ = try await (i % 2 == 0 ? h.store : other).postAssetEvent(uri: "demo://a", extra: ["i": .int(i)], now: Date()) }
            }
            try await g.waitForAll()
        }
        var seen: [Int] = []
        for r in try await runs(h, "consumer_a") {
            seen += (try JSONValue.parse(r.string("events")).arrayValue ?? []).compactMap { $0["extra"]?["i"]?.intValue }
        }
        #expect(seen.sorted() == Array(0..<40))
    }
}
