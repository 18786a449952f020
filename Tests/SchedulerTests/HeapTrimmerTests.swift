import CeleryProtocol
import FlowKit
import Foundation
import Testing
@testable import Scheduler

@Suite("Heap trimming after bursts")
struct HeapTrimmerTests {
    @Test("trims once a burst is over and the scheduler has been quiet, never while work goes on")
    func trimsOnlyWhenQuiet() {
        let t = HeapTrimmer(burst: 100, quietAfter: 2)
        #expect(!t.trimIfQuiet(now: Date().addingTimeInterval(10)))  // no burst yet
        t.noteBatch(size: 150)
        #expect(!t.trimIfQuiet(now: Date()))  // the burst has just happened
        #expect(t.trimIfQuiet(now: Date().addingTimeInterval(3)))
        #expect(!t.trimIfQuiet(now: Date().addingTimeInterval(6)))  // once per burst
        t.noteBatch(size: 10)
        #expect(!t.trimIfQuiet(now: Date().addingTimeInterval(10)))  // small work is no burst
    }

    @Test("workers' heartbeats are not work: a scheduler that only hears heartbeats after a burst is quiet, and trims")
    func heartbeatsAreNotWork() async throws {
        let h = try await Harness.make([diamond])
        let heap = h.daemon.context.heap
        let consumer = h.daemon.eventConsumer
        heap.noteBatch(size: heap.burst)  // a burst just ended
        try await Task.sleep(for: .seconds(heap.quietAfter + 0.5))
        // Heartbeats keep coming, as they do from every idle worker.
        let beats = (0..<3).map { i in
            SchedulerBroker.StreamEntry(id: "1-\(i)", event: WorkerEvent(kind: .heartbeat, worker: "w1", at: h.clock.now(), running: []))
        }
        _ = try await consumer.apply(beats, deferAck: false)
        #expect(heap.trimIfQuiet(), "a heartbeat made the scheduler look busy, and the burst's heap was kept")
    }
}
