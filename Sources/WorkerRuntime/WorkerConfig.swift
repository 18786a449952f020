import CeleryProtocol
public import FlowKit
public import Foundation

/// Tunables of a worker process.
public struct WorkerConfig: Sendable {
    public var name: String
    public var hostname: String
    public var queues: [String]
    /// Tasks run at once.
    public var concurrency: Int
    /// Seconds between heartbeats (and between refreshes of this worker's claims).
    public var heartbeatInterval: Double = 2
    /// Claimed messages whose claim is older than this are put back on their queue (by any
    /// worker or scheduler); a live worker refreshes its claims at every heartbeat.
    public var visibilityTimeout: Double = 300
    /// On shutdown, how long running tasks may take to finish before they are given back.
    public var shutdownGrace: Double = 30
    public var version: String = flowKitVersion
    /// Task messages larger than this are refused before decoding, onto the dead-letter list.
    public var maxMessageBytes: Int = KombuLayout.defaultMaxMessageBytes
    /// Where the worker keeps what it builds: Python tasks' virtualenvs, under `venvs/`
    /// (`FLOWKIT_HOME`, default `.flowkit` in the working directory).
    public var home: String = ProcessInfo.processInfo.environment["FLOWKIT_HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? ".flowkit"

    /// Where the worker's own connections (`FLOWKIT_CONN_*`), variables (`FLOWKIT_VAR_*`) and the
    /// keys that open the store's (`FLOWKIT_SECRET_KEY`) come from.
    public var environment: [String: String] = ProcessInfo.processInfo.environment

    /// The time of day the worker stamps on its events, claims and heartbeats (tests move it).
    public var clock: any WallClock = SystemClock()

    public init(name: String? = nil, hostname: String = ProcessInfo.processInfo.hostName, queues: [String] = ["default"], concurrency: Int = 2) {
        self.hostname = hostname
        self.name = name ?? "worker@\(hostname)-\(ProcessInfo.processInfo.processIdentifier)"
        self.queues = queues
        self.concurrency = max(1, concurrency)
    }
}

public let flowKitVersion = "0.2.0"
