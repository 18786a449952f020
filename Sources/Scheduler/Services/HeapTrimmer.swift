import FlowKit
import Foundation

/// Gives the heap back to the system after a burst. glibc keeps freed memory in its arenas, so
/// a scheduler that once dispatched ten thousand tasks at once would keep that high-water mark
/// for good; once a burst is over (the next batch is small), `malloc_trim` returns it.
final class HeapTrimmer: @unchecked Sendable {
    private let lock = NSLock()
    private var workSinceTrim = 0
    private var lastTrim = Date.distantPast
    /// Work (events applied, messages built) that counts as a burst.
    let burst: Int
    /// At most one trim this often: a trim costs milliseconds, and the pages it frees are faulted
    /// in again if the load goes on.
    let minInterval: Double

    init(burst: Int = 500, minInterval: Double = 1) {
        self.burst = burst
        self.minInterval = minInterval
    }

    /// Records `size` units of work done by one batch; trims when an earlier burst has ended.
    func noteBatch(size: Int) {
        let trim: Bool = lock.withLock {
            workSinceTrim += size
            let now = Date()
            guard size < burst / 4, workSinceTrim >= burst, now.timeIntervalSince(lastTrim) >= minInterval else { return false }
            workSinceTrim = 0
            lastTrim = now
            return true
        }
        if trim { releaseFreeHeapMemory() }
    }
}
