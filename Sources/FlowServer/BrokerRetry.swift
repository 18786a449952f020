import Foundation
import Logging
import Scheduler

/// Broker messages that follow a committed write (a cancel's stop, a clear's new messages),
/// sent at once or, with Redis away, again in the background until they go through.
///
/// The database write has happened either way, so the caller answers that it did. A stop that
/// never arrives leaves a cancelled try running to its end (its outcome is then ignored); a
/// cleared task whose message is lost is re-sent by the schedulers' lost-message rescuer.
///
/// ```swift
/// let sent = await BrokerRetry.send(work, broker: broker, logger: logger, what: "stop for run r1")
/// ```
enum BrokerRetry {
    /// How long the background retries go on before they give up (logged).
    static let giveUpAfter: Double = 600

    static func send(_ work: BrokerWork, broker: SchedulerBroker, logger: Logger, what: String) async -> Bool {
        do {
            try await broker.perform(work)
            return true
        } catch {
            logger.warning("\(what): the broker is unavailable (\(error)); the write stands, retrying in the background")
            Task.detached {
                let end = ContinuousClock.now.advanced(by: .milliseconds(Int64(giveUpAfter * 1000)))
                var pause = 0.5
                while ContinuousClock.now < end {
                    try? await Task.sleep(for: .milliseconds(Int(pause * 1000)))
                    pause = min(pause * 2, 10)
                    do {
                        try await broker.perform(work)
                        logger.info("\(what): sent after the broker came back")
                        return
                    } catch {}
                }
                logger.error("\(what): not sent within \(Int(giveUpAfter))s; the broker stayed unavailable")
            }
            return false
        }
    }
}
