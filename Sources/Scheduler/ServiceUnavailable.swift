import PostgresClient
import RedisClient

/// A store or broker operation that failed for want of a server — not for anything the caller
/// asked — so that callers (the API's 503s) need not know PostgreSQL's or Redis's error types.
public struct ServiceUnavailable: Error, Sendable {
    public enum Reason: String, Sendable {
        /// PostgreSQL could not be reached, or the connection was lost.
        case databaseUnavailable = "database_unavailable"
        /// PostgreSQL cancelled the statement: a statement or lock timeout ran out.
        case databaseBusy = "database_busy"
        /// Redis could not be reached, or the connection was lost.
        case brokerUnavailable = "broker_unavailable"
    }

    public let reason: Reason
    public let message: String

    /// Classifies an error thrown by a `SchedulerStore` or `SchedulerBroker` operation; nil
    /// when the error is not an outage.
    public init?(_ error: any Error) {
        switch error {
        case let p as PGError where p.isConnectionLoss:
            reason = .databaseUnavailable; message = "PostgreSQL is unavailable: \(p.message)"
        case let p as PGError where p.isStatementTimeout:
            reason = .databaseBusy; message = "PostgreSQL did not finish the request in time (statement timeout); try again"
        case let r as RedisError where r.kind == .connection:
            reason = .brokerUnavailable; message = "Redis is unavailable: \(r.message)"
        default:
            return nil
        }
    }
}
