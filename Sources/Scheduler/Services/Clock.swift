public import Foundation

/// Where services read the time and wait; tests inject a clock they move by hand.
public protocol SchedulerClock: Sendable {
    func now() -> Date
    /// Waits `seconds` of this clock's time.
    func sleep(seconds: Double) async throws
}

public struct SystemClock: SchedulerClock {
    public init() {}
    public func now() -> Date { Date() }
    public func sleep(seconds: Double) async throws { try await Task.sleep(for: .milliseconds(Int(seconds * 1000))) }
}

/// A clock that moves only when told to.
public final class ManualClock: SchedulerClock, @unchecked Sendable {
    private let lock = NSLock()
    private var current: Date
    public init(_ start: Date) { current = start }
    public func now() -> Date { lock.withLock { current } }
    public func advance(by seconds: Double) { lock.withLock { current = current.addingTimeInterval(seconds) } }
    public func set(_ date: Date) { lock.withLock { current = date } }
    /// Does not wait for the time to pass (tests move it): yields for 10 ms of real time, so a
    /// loop driven by this clock turns slowly instead of spinning.
    public func sleep(seconds: Double) async throws { try await Task.sleep(for: .milliseconds(10)) }
}
