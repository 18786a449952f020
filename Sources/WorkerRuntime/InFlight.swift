import CeleryProtocol
import FlowKit
import Foundation

/// A task this worker is running: its log buffer and its cancellation.
final class InFlightEntry: @unchecked Sendable {
    let messageId: String
    let deliveryTag: String
    let runId: String
    let taskId: String
    let tryNumber: Int
    private let lock = NSLock()
    private var lines: [String] = []
    private var task: Task<JSONValue?, any Error>?
    private var cancelled = false
    private var returned = false
    private var startReportClaimed = false
    private var timedOutFlag = false
    private var ownMasker: SecretMasker?

    /// The masker of this try when its message brought secrets of its own (else the worker's).
    var masker: SecretMasker? {
        get { lock.withLock { ownMasker } }
        set { lock.withLock { ownMasker = newValue } }
    }

    init(messageId: String, deliveryTag: String, runId: String, taskId: String, tryNumber: Int) {
        self.messageId = messageId; self.deliveryTag = deliveryTag; self.runId = runId; self.taskId = taskId; self.tryNumber = tryNumber
    }

    func log(_ line: String) { lock.withLock { lines.append(line) } }

    /// Buffered log lines as events (batched, so logs never cost a round trip per line).
    func drainLogEvents(base: WorkerEvent, masker: SecretMasker? = nil, at: Double) -> [WorkerEvent] {
        var taken: [String] = lock.withLock { let l = lines; lines = []; return l }
        if let masker { taken = taken.map(masker.mask) }
        guard !taken.isEmpty else { return [] }
        return stride(from: 0, to: taken.count, by: 500).map { i in
            var e = base
            e.kind = .log
            e.at = at
            e.lines = Array(taken[i..<min(i + 500, taken.count)])
            return e
        }
    }

    func attach(_ t: Task<JSONValue?, any Error>) {
        let cancelNow: Bool = lock.withLock { task = t; return cancelled }
        if cancelNow { t.cancel() }
    }

    func cancel() {
        let t: Task<JSONValue?, any Error>? = lock.withLock { cancelled = true; return task }
        t?.cancel()
    }

    var isCancelled: Bool { lock.withLock { cancelled } }

    /// Set by the timeout task, read by the executing one: behind the lock like the rest.
    var timedOut: Bool {
        get { lock.withLock { timedOutFlag } }
        set { lock.withLock { timedOutFlag = newValue } }
    }

    /// True for the first caller only: either the delayed start report or the outcome reports the start.
    func claimStartReport() -> Bool {
        lock.withLock {
            if startReportClaimed { return false }
            startReportClaimed = true
            return true
        }
    }

    func giveBack() {
        lock.withLock { returned = true }
        cancel()
    }
    var givenBack: Bool { lock.withLock { returned } }
}

final class InFlight: @unchecked Sendable {
    private let lock = NSLock()
    private var entries: [String: InFlightEntry] = [:]

    func add(messageId: String, deliveryTag: String, runId: String, taskId: String, tryNumber: Int) -> InFlightEntry {
        let e = InFlightEntry(messageId: messageId, deliveryTag: deliveryTag, runId: runId, taskId: taskId, tryNumber: tryNumber)
        lock.withLock { entries[messageId] = e }
        return e
    }
    func remove(_ id: String) { lock.withLock { _ = entries.removeValue(forKey: id) } }
    var all: [InFlightEntry] { lock.withLock { Array(entries.values) } }
}
