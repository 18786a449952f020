import Foundation

/// How a failed try is retried: how many times, and after what delay.
///
/// The delay after try `n` fails is `delay × backoff^(n-1)`, capped at `maxDelay`, then moved
/// by up to `jitter` (a fraction) either way so that many failing tasks do not retry in step.
///
/// ```swift
/// RetryPolicy(retries: 3, delay: .seconds(30), backoff: 2, maxDelay: .seconds(600), jitter: 0.1)
/// ```
public struct RetryPolicy: Sendable, Hashable, Codable {
    public var retries: Int
    /// Seconds before the first retry.
    public var delaySeconds: Double
    public var backoff: Double
    public var maxDelaySeconds: Double?
    public var jitter: Double

    public init(retries: Int = 0, delay: Duration = .seconds(300), backoff: Double = 1, maxDelay: Duration? = nil, jitter: Double = 0) {
        self.retries = retries
        self.delaySeconds = delay.seconds
        self.backoff = backoff
        self.maxDelaySeconds = maxDelay?.seconds
        self.jitter = jitter
    }

    public static let none = RetryPolicy(retries: 0)

    /// Total tries a task gets: the first plus the retries.
    public var maxTries: Int { retries + 1 }

    /// The delay before the try that follows failed try `tryNumber` (1-based), before jitter.
    public func baseDelay(afterTry tryNumber: Int) -> Double {
        let raw = delaySeconds * pow(backoff, Double(max(0, tryNumber - 1)))
        if let cap = maxDelaySeconds { return min(raw, cap) }
        return raw
    }

    /// The delay before the try that follows failed try `tryNumber`; `unit` is a random number in [0, 1).
    public func delay(afterTry tryNumber: Int, unit: Double = Double.random(in: 0..<1)) -> Double {
        let base = baseDelay(afterTry: tryNumber)
        guard jitter > 0 else { return base }
        return max(0, base * (1 + jitter * (2 * unit - 1)))
    }

    func validate(flow: String, task: String?) throws {
        let owner = task.map { "task `\($0)`" } ?? "default task options"
        if retries < 0 { throw FlowValidationError.invalidOption(flow: flow, detail: "\(owner): retries must be ≥ 0, got \(retries)") }
        if delaySeconds < 0 { throw FlowValidationError.invalidOption(flow: flow, detail: "\(owner): retry delay must be ≥ 0") }
        if backoff < 1 { throw FlowValidationError.invalidOption(flow: flow, detail: "\(owner): backoff must be ≥ 1, got \(backoff)") }
        if !(0...1).contains(jitter) { throw FlowValidationError.invalidOption(flow: flow, detail: "\(owner): jitter must be in 0...1, got \(jitter)") }
    }
}

extension Duration {
    /// The duration in seconds, as a Double.
    public var seconds: Double {
        let c = components
        return Double(c.seconds) + Double(c.attoseconds) / 1e18
    }
}
