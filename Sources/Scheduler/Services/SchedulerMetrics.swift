public import CoreMetrics
import Foundation

/// What a scheduler measures, through swift-metrics: the hop from a task's end (on its worker)
/// to its downstream tasks' messages being enqueued, one batch of worker events, and one pass
/// of a leader-only duty. The process chooses the backend (`flowctl` gives a Prometheus
/// registry, served on `/metrics`); the default records nothing.
public struct SchedulerMetrics: Sendable {
    public static let hopLabel = "flowkit_hop_seconds"
    public static let eventBatchLabel = "flowkit_scheduler_event_batch_seconds"
    public static let maintenanceLabel = "flowkit_scheduler_maintenance_seconds"
    /// Histogram buckets, in seconds, for all three (the Prometheus backend takes them by label).
    public static let latencyBuckets = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]

    let hop: CoreMetrics.Timer
    let eventBatch: CoreMetrics.Timer
    let maintenance: CoreMetrics.Timer

    public init(factory: any MetricsFactory = NOOPMetricsHandler.instance) {
        hop = CoreMetrics.Timer(label: Self.hopLabel, factory: factory)
        eventBatch = CoreMetrics.Timer(label: Self.eventBatchLabel, factory: factory)
        maintenance = CoreMetrics.Timer(label: Self.maintenanceLabel, factory: factory)
    }
}
