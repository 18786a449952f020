import Foundation

/// A Prometheus histogram with fixed buckets, safe to observe from any thread.
public final class Histogram: @unchecked Sendable {
    public let name: String
    public let help: String
    let buckets: [Double]
    private let lock = NSLock()
    private var counts: [Int]
    private var sum = 0.0
    private var count = 0

    public init(name: String, help: String, buckets: [Double]) {
        self.name = name
        self.help = help
        self.buckets = buckets
        self.counts = Array(repeating: 0, count: buckets.count)
    }

    public func observe(_ value: Double) {
        lock.withLock {
            for (i, b) in buckets.enumerated() where value <= b { counts[i] += 1 }
            sum += value
            count += 1
        }
    }

    /// The Prometheus text exposition of this histogram.
    public var exposition: String {
        lock.withLock {
            var lines = ["# HELP \(name) \(help)", "# TYPE \(name) histogram"]
            for (b, c) in zip(buckets, counts) { lines.append("\(name)_bucket{le=\"\(b)\"} \(c)") }
            lines.append("\(name)_bucket{le=\"+Inf\"} \(count)")
            lines.append("\(name)_sum \(sum)")
            lines.append("\(name)_count \(count)")
            return lines.joined(separator: "\n")
        }
    }
}

/// What the scheduler running in this process measures: the hop from a task's end (on its
/// worker) to its downstream tasks' messages being enqueued, and how long each loop's batch takes.
public enum SchedulerMetrics {
    static let latencyBuckets = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]
    public static let hop = Histogram(name: "flowkit_hop_seconds",
                                      help: "From a task's end on its worker to its ready downstream tasks' messages in the broker.",
                                      buckets: latencyBuckets)
    public static let eventBatch = Histogram(name: "flowkit_scheduler_event_batch_seconds",
                                             help: "Applying one batch of worker events: transaction and broker work.",
                                             buckets: latencyBuckets)
    public static let maintenance = Histogram(name: "flowkit_scheduler_maintenance_seconds",
                                              help: "One pass of the leader's maintenance (reaper, restore, lost messages).",
                                              buckets: latencyBuckets)
    public static var all: [Histogram] { [hop, eventBatch, maintenance] }
}
