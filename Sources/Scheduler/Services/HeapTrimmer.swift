import FlowKit
import Foundation
import ProcessSupport

/// Gives the heap back to the system after a burst. glibc keeps freed memory in its arenas, so
/// a scheduler that once dispatched ten thousand tasks at once would keep that high-water mark
/// for good; once a burst is over, `malloc_trim` returns it.
///
/// Only once the scheduler has gone quiet: `malloc_trim` holds glibc's arena locks while it
/// walks the heap, so every thread that allocates waits for it — under load that was a
/// connection thread in the middle of a transaction, holding row locks for seconds
/// (`make stress`, 100 waiting clients: sessions idle in transaction 14–40 s with trimming
/// after each burst, under 2 s without).
final class HeapTrimmer: @unchecked Sendable {
    private let lock = NSLock()
    private var workSinceTrim = 0
    private var lastWork = Date.distantPast
    /// Work (events applied, messages built) that counts as a burst.
    let burst: Int
    /// Seconds without work after which the burst is over.
    let quietAfter: Double

    init(burst: Int = 500, quietAfter: Double = 2) {
        self.burst = burst
        self.quietAfter = quietAfter
    }

    /// Records `size` units of work done by one batch.
    func noteBatch(size: Int) {
        guard size > 0 else { return }
        lock.withLock {
            workSinceTrim += size
            lastWork = Date()
        }
    }

    /// Trims when a burst happened and nothing has been done for `quietAfter` seconds; returns whether it did.
    @discardableResult
    func trimIfQuiet(now: Date = Date()) -> Bool {
        let trim: Bool = lock.withLock {
            guard workSinceTrim >= burst, now.timeIntervalSince(lastWork) >= quietAfter else { return false }
            workSinceTrim = 0
            return true
        }
        if trim { releaseFreeHeapMemory() }
        return trim
    }
}
