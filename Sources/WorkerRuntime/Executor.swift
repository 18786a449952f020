import CeleryProtocol
import FlowKit
import Foundation

/// The worker's executor: the slot gate that bounds tries running at once, the tries in flight,
/// and running one try — its body, its execution timeout, its cancellation — into an `Outcome`.
/// It talks to no server.
final class Executor: Sendable {
    let slots: SlotGate
    let inFlight = InFlight()
    let concurrency: Int
    let home: String
    /// The direct downstream task ids of each branch task, by Celery task name: what it may choose.
    let branchTargets: [String: [String]]

    enum Outcome: Equatable { case success(JSONValue?), skipped(String), notReady(String), failure(String) }

    init(concurrency: Int, home: String, branchTargets: [String: [String]]) {
        self.concurrency = concurrency
        self.slots = SlotGate(concurrency)
        self.home = home
        self.branchTargets = branchTargets
    }

    // MARK: - Slots

    /// Waits until a slot is free (or `wake` on shutdown); returns how many are.
    func waitForSlots() async -> Int {
        await slots.waitForFree()
        return slots.freeCount
    }

    /// Handles one claimed message in a slot of its own, released when `body` ends.
    func inSlot(_ body: @escaping @Sendable () async -> Void) {
        slots.take()
        Task { await body(); self.slots.release() }
    }

    /// True while any slot is taken: a message still being handled, run or not.
    var busy: Bool { slots.freeCount < concurrency || !inFlight.all.isEmpty }

    /// Wakes whatever waits for a slot (on shutdown).
    func wake() { slots.wakeAll() }

    // MARK: - Cancellation

    /// Cancels the running tries of these messages (their runs were cancelled).
    func cancel(messageIds: Set<String>) {
        for e in inFlight.all where messageIds.contains(e.messageId) { e.cancel() }
    }

    /// Stops every try still running and marks it given back: its outcome is not reported.
    func abandonAll() -> [InFlightEntry] {
        let left = inFlight.all
        for e in left { e.giveBack() }
        return left
    }

    // MARK: - One try

    /// Runs `task`'s body with `ctx`, failing it past `timeout` seconds; cancelled with `entry`.
    func execute(_ task: FlowTask, _ ctx: TaskContext, timeout: Double?, entry: InFlightEntry) async -> Outcome {
        let targets = branchTargets[FlowTaskInvocation.taskName(flow: ctx.flowId, task: task.id)] ?? []
        let home = self.home
        let work = Task<JSONValue?, any Error> {
            try await TaskBodyRunner.run(task, ctx, timeout: timeout, home: home, branchTargets: targets)
        }
        entry.attach(work)
        let result: Result<JSONValue?, any Error> = await withCheckedContinuation { cont in
            let once = Once()
            Task {
                let r = await work.result
                if once.claim() { cont.resume(returning: r) }
            }
            if let timeout {
                Task {
                    try? await Task.sleep(for: .milliseconds(Int(timeout * 1000)))
                    if once.claim() {
                        entry.timedOut = true
                        work.cancel()
                        cont.resume(returning: .failure(TaskError("timed out after \(timeout)s (execution timeout)")))
                    }
                }
            }
        }
        return Self.outcome(result, task: task.id, entry: entry)
    }

    static func outcome(_ result: Result<JSONValue?, any Error>, task: String, entry: InFlightEntry) -> Outcome {
        switch result {
        case .success(let v):
            guard let v else { return .success(nil) }
            do { _ = try checkResultSize(v, task: task); return .success(v) } catch { return .failure("\(error)") }
        case .failure(let e as TaskSkipped): return .skipped(e.reason)
        case .failure(let e as SensorNotReady): return .notReady(e.reason)
        case .failure(let e) where e is CancellationError:
            return .failure(entry.timedOut ? "timed out" : entry.isCancelled ? "cancelled: the run was cancelled" : "cancelled")
        case .failure(let e): return .failure("\(e)")
        }
    }
}

/// Resumes a continuation once, whichever side gets there first.
final class Once: @unchecked Sendable {
    private let lock = NSLock()
    private var done = false
    func claim() -> Bool { lock.withLock { if done { return false }; done = true; return true } }
}
