public import Foundation

/// Where the engine reads the time of day and waits: the scheduler's services and store writes,
/// the API and the worker take one, so that a test can move time instead of sleeping through it.
/// (Timeouts of calls measure durations on `ContinuousClock`, not on this.)
public protocol WallClock: Sendable {
    func now() -> Date
    /// Waits `seconds` of this clock's time.
    func sleep(seconds: Double) async throws
}

/// The scheduler's name for it.
public typealias SchedulerClock = WallClock

/// The system's time of day.
public struct SystemClock: WallClock {
    public init() {}
    public func now() -> Date { Date() }
    public func sleep(seconds: Double) async throws { try await Task.sleep(for: .milliseconds(Int(seconds * 1000))) }
}

/// A clock that moves only when told to: for tests.
public final class ManualClock: WallClock, @unchecked Sendable {
    private let lock = NSLock()
    private var current: Date
    public init(_ start: Date = Date(timeIntervalSince1970: 1_800_000_000)) { current = start }
    public func now() -> Date { lock.withLock { current } }
    public func advance(by seconds: Double) { lock.withLock { current = current.addingTimeInterval(seconds) } }
    public func set(_ date: Date) { lock.withLock { current = date } }
    /// Does not wait for the time to pass (tests move it): yields for 10 ms of real time, so a
    /// loop driven by this clock turns slowly instead of spinning.
    public func sleep(seconds: Double) async throws { try await Task.sleep(for: .milliseconds(10)) }
}
