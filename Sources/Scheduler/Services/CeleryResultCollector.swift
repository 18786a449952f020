import CeleryProtocol
import FlowKit
import Foundation

/// Outcomes of tasks Celery workers ran (`f.celery(…)`), read from Celery's result backend
/// (`celery-task-meta-<id>`) and applied as the worker events a FlowKit worker would have sent.
/// Leader only.
public struct CeleryResultCollector: SchedulerDuty {
    public struct Config: Sendable {
        public var interval: Double = 2
        public init() {}
        public func validate() throws { try requirePositive("Celery result collector", ["interval": interval]) }
    }

    public let name = "Celery result collector"
    public let leaderOnly = true
    let context: SchedulerContext
    let config: Config


    public func runOnce() async throws -> Double {
        let now = context.clock.now()
        let tries = try await context.store.celeryTriesInFlight()
        guard !tries.isEmpty else { return config.interval }
        let metas = try await context.broker.celeryResults(tries.map(\.messageId))
        var events: [WorkerEvent] = []
        for t in tries {
            guard let meta = metas[t.messageId], let status = meta["status"]?.stringValue else { continue }
            let worker = "celery:" + (meta["worker"]?.stringValue ?? "worker")
            func event(_ kind: WorkerEvent.Kind) -> WorkerEvent {
                WorkerEvent(kind: kind, worker: worker, at: now, messageId: t.messageId, runId: t.runId, taskId: t.taskId, tryNumber: t.tryNumber)
            }
            switch status {
            case "SUCCESS":
                var e = event(.succeeded)
                e.result = meta["result"]
                e.startedAt = now.timeIntervalSince1970
                events.append(e)
            case "FAILURE", "REVOKED":
                var e = event(.failed)
                let exc = meta["result"]
                let type = exc?["exc_type"]?.stringValue ?? status
                let message = exc?["exc_message"]?.arrayValue?.compactMap(\.stringValue).joined(separator: " ") ?? exc?.compactJSON ?? ""
                e.error = "\(type): \(message)"
                e.startedAt = now.timeIntervalSince1970
                events.append(e)
            case "STARTED" where t.queued:
                events.append(event(.started))
            default:
                break
            }
        }
        guard !events.isEmpty else { return config.interval }
        try await context.broker.perform(try await context.store.applyEvents(events, now: now))
        return config.interval
    }
}
