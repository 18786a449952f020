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
}
