import Foundation

/// Where services read the time; tests inject a clock they move by hand.
public protocol SchedulerClock: Sendable {
    func now() -> Date
}

public struct SystemClock: SchedulerClock {
    public init() {}
    public func now() -> Date { Date() }
}

/// A clock that moves only when told to.
public final class ManualClock: SchedulerClock, @unchecked Sendable {
    private let lock = NSLock()
    private var current: Date
    public init(_ start: Date) { current = start }
    public func now() -> Date { lock.withLock { current } }
    public func advance(by seconds: Double) { lock.withLock { current = current.addingTimeInterval(seconds) } }
    public func set(_ date: Date) { lock.withLock { current = date } }
}
