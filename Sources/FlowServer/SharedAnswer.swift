import Foundation
import Synchronization

/// One answer shared by concurrent callers and reused while it is younger than `maxAge` seconds
/// (wall-clock time, from when it was asked of the database). For a read every open dashboard
/// repeats — the home page's counts over a week of runs, a scan of hundreds of thousands of rows
/// with a million runs — so that it costs the database once per `maxAge`, however many
/// dashboards are open. An error is not kept: the next caller asks again.
///
/// With `maxAge` no longer than the dashboard's debounce after a change (1 s), a redraw caused by
/// a change never gets an answer asked before that change committed.
final class SharedAnswer<Value: Sendable>: Sendable {
    private let maxAge: Double
    private let current = Mutex<(at: ContinuousClock.Instant, task: Task<Value, any Error>)?>(nil)

    init(maxAge: Double) { self.maxAge = maxAge }

    func get(_ make: @escaping @Sendable () async throws -> Value) async throws -> Value {
        let now = ContinuousClock.now
        let task = current.withLock { slot -> Task<Value, any Error> in
            if let slot, now - slot.at < .seconds(maxAge) { return slot.task }
            let task = Task { try await make() }
            slot = (now, task)
            return task
        }
        do {
            return try await task.value
        } catch {
            current.withLock { slot in if slot?.task == task { slot = nil } }
            throw error
        }
    }
}
