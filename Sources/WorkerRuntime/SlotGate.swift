import Foundation

/// Counts free execution slots; `waitForFree` suspends until at least one is free.
final class SlotGate: @unchecked Sendable {
    private let lock = NSLock()
    private var free: Int
    private var waiters: [CheckedContinuation<Void, Never>] = []

    init(_ n: Int) { free = n }

    var freeCount: Int { lock.withLock { free } }

    func waitForFree() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let ready: Bool = lock.withLock {
                if free > 0 { return true }
                waiters.append(c)
                return false
            }
            if ready { c.resume() }
        }
    }

    func take() { lock.withLock { free -= 1 } }

    func release() {
        let w: CheckedContinuation<Void, Never>? = lock.withLock {
            free += 1
            return waiters.isEmpty ? nil : waiters.removeFirst()
        }
        w?.resume()
    }

    /// Wakes every waiter (on shutdown).
    func wakeAll() {
        let ws: [CheckedContinuation<Void, Never>] = lock.withLock { let w = waiters; waiters = []; return w }
        ws.forEach { $0.resume() }
    }
}
