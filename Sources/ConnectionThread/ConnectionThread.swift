import Foundation
public import Synchronization

/// A thread of its own that runs submitted jobs one at a time, in order: where a connection's
/// blocking C calls (libpq, hiredis) run.
///
/// Not a `DispatchQueue`: serial queues share GCD's worker threads, and on Linux a few
/// connections blocked in `LISTEN` waits or `BLMOVE` can starve every other queue of a thread.
/// A dedicated thread per connection cannot be starved.
///
/// ```swift
/// let thread = ConnectionThread(name: "pg-1")
/// thread.submit { /* a blocking call */ }
/// ```
public final class ConnectionThread: @unchecked Sendable {
    private let condition = NSCondition()
    private var jobs: [() -> Void] = []
    private var stopping = false

    public init(name: String) {
        let thread = Thread { [self] in self.loop() }
        thread.name = name
        thread.stackSize = 1 << 20
        thread.start()
    }

    /// Runs `job` on the thread after the jobs submitted before it.
    public func submit(_ job: @escaping () -> Void) {
        condition.lock()
        jobs.append(job)
        condition.signal()
        condition.unlock()
    }

    /// Runs `job` on the thread and waits for it (never call it from the thread itself).
    public func sync<T>(_ job: @escaping () -> T) -> T {
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var result: T?
        submit { result = job(); done.signal() }
        done.wait()
        return result!
    }

    /// Lets the thread end once the jobs already submitted have run.
    public func stop() {
        condition.lock()
        stopping = true
        condition.signal()
        condition.unlock()
    }

    private func loop() {
        while true {
            condition.lock()
            while jobs.isEmpty && !stopping { condition.wait() }
            if jobs.isEmpty && stopping { condition.unlock(); return }
            let batch = jobs
            jobs.removeAll(keepingCapacity: true)
            condition.unlock()
            for job in batch { job() }
        }
    }
}

/// Round trips this process made to PostgreSQL and Redis (a statement or pipeline sent and its
/// replies read), for `flowctl bench`: where a hop's time goes, in a count that does not vary
/// with the machine's speed. One relaxed atomic add per round trip.
public enum RoundTrips {
    public static let postgres = Atomic<Int>(0)
    public static let redis = Atomic<Int>(0)
}
