import CeleryProtocol
public import FlowKit
public import Foundation
import Logging
import PostgresClient
public import RedisClient

/// Tunables of a scheduler process.
public struct SchedulerConfig: Sendable {
    public var name: String
    /// A running task with no heartbeat for this long is a zombie.
    public var zombieThreshold: Double = 30
    /// A task queued this long is checked for a lost message.
    public var lostMessageAfter: Double = 30
    /// Claimed messages not acknowledged within this long are restored to their queue (kombu's
    /// visibility timeout; workers refresh their claims with every heartbeat).
    public var visibilityTimeout: Double = 300
    /// How often the leader's maintenance (reaper, restore, lost messages) runs.
    public var maintenanceInterval: Double = 2
    public var eventBatch: Int = 1000
    /// The pool admitter's backstop: it looks this often even when no notification woke it.
    public var poolAdmitterMaxWait: Double = 5
    /// Lease, timeout, backoff and attempts of notification delivery.
    public var notifications = NotificationDeliverer.Config()
    /// Finished runs are deleted this many seconds after they end (nil: kept for ever).
    public var retention: Double?
    /// A run with a task queued this long that no live worker can take (none carries the run's
    /// flow version, or consumes the task's queue) is flagged stalled.
    public var stalledRunAfter: Double = 10

    public init(name: String = "scheduler-\(ProcessInfo.processInfo.hostName)-\(ProcessInfo.processInfo.processIdentifier)") {
        self.name = name
    }
}

/// A scheduler configuration that cannot work, naming the duty and the setting.
public struct SchedulerConfigError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

extension SchedulerConfig {
    /// The duties' configurations, from the process-wide settings above.
    var runStarter: RunStarter.Config { RunStarter.Config() }
    var poolAdmitter: PoolAdmitter.Config { var c = PoolAdmitter.Config(); c.maxWait = poolAdmitterMaxWait; return c }
    var flowTriggers: FlowTriggerService.Config { FlowTriggerService.Config() }
    var retryTimer: RetryTimer.Config { RetryTimer.Config() }
    var cronTicker: CronTicker.Config { CronTicker.Config() }
    var backfillRunner: BackfillRunner.Config { BackfillRunner.Config() }
    var eventConsumer: EventConsumer.Config { var c = EventConsumer.Config(); c.batch = eventBatch; return c }
    var reaper: Reaper.Config { var c = Reaper.Config(); c.zombieThreshold = zombieThreshold; c.interval = maintenanceInterval; return c }
    var unackedRestorer: UnackedRestorer.Config {
        var c = UnackedRestorer.Config(); c.visibilityTimeout = visibilityTimeout; c.interval = maintenanceInterval; return c
    }
    var lostMessages: LostMessageRescuer.Config { var c = LostMessageRescuer.Config(); c.after = lostMessageAfter; c.interval = maintenanceInterval; return c }
    var abandonedEvents: AbandonedEventClaimer.Config { var c = AbandonedEventClaimer.Config(); c.idle = zombieThreshold; c.interval = maintenanceInterval; return c }
    var celeryResults: CeleryResultCollector.Config { var c = CeleryResultCollector.Config(); c.interval = maintenanceInterval; return c }
    var runTimeouts: RunTimeoutEnforcer.Config { RunTimeoutEnforcer.Config() }
    var notificationDeliverer: NotificationDeliverer.Config { notifications }
    var retentionCleaner: RetentionCleaner.Config { var c = RetentionCleaner.Config(); c.keep = retention; return c }
    var versionWatch: VersionWatch.Config {
        var c = VersionWatch.Config(); c.interval = min(5, maintenanceInterval * 2); c.stalledAfter = stalledRunAfter; return c
    }
    var heartbeat: SchedulerHeartbeat.Config { var c = SchedulerHeartbeat.Config(); c.interval = maintenanceInterval; return c }

    /// Checks every duty's configuration; the error names the duty and the setting.
    public func validate() throws {
        guard !name.isEmpty else { throw SchedulerConfigError("the scheduler needs a name") }
        try runStarter.validate(); try poolAdmitter.validate(); try flowTriggers.validate(); try retryTimer.validate(); try cronTicker.validate(); try backfillRunner.validate(); try eventConsumer.validate()
        try reaper.validate(); try unackedRestorer.validate(); try lostMessages.validate(); try abandonedEvents.validate()
        try celeryResults.validate(); try heartbeat.validate(); try runTimeouts.validate(); try notificationDeliverer.validate()
        try retentionCleaner.validate(); try versionWatch.validate()
    }
}

/// The scheduler: turns triggers, cron ticks and worker events into task messages.
///
/// It is a set of small duties over one store (`Services/`, a file each), assembled here:
///
/// | duty | runs on | does |
/// | --- | --- | --- |
/// | `RunStarter` | every scheduler | starts queued runs as flows have room; woken by `NOTIFY flowkit_runs` |
/// | `PoolAdmitter` | every scheduler | starts tasks waiting for a pool or concurrency slot; woken by `NOTIFY flowkit_slots` |
/// | `FlowTriggerService` | every scheduler | starts runs of flows declared `after:` a successful run, and runs trigger-flow tasks |
/// | `EventConsumer` | every scheduler | applies worker events, one transaction per batch, and sends the next tasks |
/// | `EventAcknowledger` | every scheduler | acknowledges events once a synchronous commit made them durable |
/// | `RetryTimer` | every scheduler | queues tries whose retry delay has passed |
/// | `CronTicker` | every scheduler | creates the runs of due cron ticks (one per tick) |
/// | `BackfillRunner` | every scheduler | makes or re-runs the next ticks of running backfills, within each one's `max_active_runs` |
/// | `SchedulerHeartbeat` | every scheduler | records this scheduler for `/health`; trims the heap after bursts |
/// | `Reaper` | the leader | fails or retries zombie and timed-out tries |
/// | `UnackedRestorer` | the leader | puts back messages a dead worker claimed |
/// | `LostMessageRescuer` | the leader | sends again messages the broker lost |
/// | `AbandonedEventClaimer` | the leader | applies events a dead scheduler read and never acknowledged |
/// | `CeleryResultCollector` | the leader | reads the outcomes of tasks Celery workers ran |
/// | `RunTimeoutEnforcer` | the leader | fails runs past their flow's `runTimeout` |
/// | `NotificationDeliverer` | the leader | delivers the notification outbox, retrying with backoff |
/// | `VersionWatch` | the leader | re-elects flows' current versions; flags runs no live worker can take |
/// | `RetentionCleaner` | the leader | deletes finished runs past the retention policy (`FLOWKIT_RETENTION`), hourly |
///
/// The leader is whichever scheduler holds the `LeaderElector`'s advisory lock; another takes
/// over when the leader's session ends. Any number of schedulers can share one database.
public final class SchedulerDaemon: Sendable {
    public let store: SchedulerStore
    public let broker: SchedulerBroker
    public let leader: LeaderElector
    let flows: [Flow]
    /// Flows of this binary that could not be registered (`FlowRegistry(admitting:)`).
    let importErrors: [FlowImportError]
    let config: SchedulerConfig
    let context: SchedulerContext
    let listen: PGConnection
    let startedAt: Date

    public let runStarter: RunStarter
    public let poolAdmitter: PoolAdmitter
    public let flowTriggerService: FlowTriggerService
    public let eventConsumer: EventConsumer
    public let eventAcknowledger: EventAcknowledger
    public let retryTimer: RetryTimer
    public let cronTicker: CronTicker
    public let backfillRunner: BackfillRunner
    public let heartbeat: SchedulerHeartbeat
    public let reaper: Reaper
    public let unackedRestorer: UnackedRestorer
    public let lostMessageRescuer: LostMessageRescuer
    public let abandonedEventClaimer: AbandonedEventClaimer
    public let celeryResultCollector: CeleryResultCollector
    public let runTimeoutEnforcer: RunTimeoutEnforcer
    public let notificationDeliverer: NotificationDeliverer
    public let retentionCleaner: RetentionCleaner
    public let versionWatch: VersionWatch

    public init(databaseURL: String, redis: RedisConfig, flows: [Flow], config: SchedulerConfig,
                clock: any SchedulerClock = SystemClock(), poolSize: Int = 3, metrics: SchedulerMetrics = SchedulerMetrics(),
                notifiers: [any Notifier] = [], connections: [String: String] = namedConnections(), importErrors: [FlowImportError] = []) {
        self.importErrors = importErrors
        self.startedAt = clock.now()
        self.store = SchedulerStore(db: PGPool(databaseURL, size: poolSize, label: "sched-pg"), clock: clock)
        self.broker = SchedulerBroker(config: redis, consumer: config.name)
        self.leader = LeaderElector(databaseURL: databaseURL)
        self.flows = flows
        self.config = config
        // LISTEN needs a session of its own: past a transaction pooler, the session endpoint.
        let sessionURL = PGEndpoint.session(databaseURL)
        self.listen = PGConnection(sessionURL, label: "sched-listen")
        var l = Logger(label: "flowkit.scheduler")
        l[metadataKey: "scheduler"] = "\(config.name)"
        let context = SchedulerContext(name: config.name, store: store, broker: broker, clock: clock, logger: l, heap: HeapTrimmer(),
                                       metrics: metrics)
        self.context = context
        let acks = PendingAcks()
        runStarter = RunStarter(context: context, config: config.runStarter, listen: listen)
        poolAdmitter = PoolAdmitter(context: context, config: config.poolAdmitter, listen: PGConnection(sessionURL, label: "sched-slots"))
        flowTriggerService = FlowTriggerService(context: context, config: config.flowTriggers,
                                                listen: PGConnection(sessionURL, label: "sched-triggers"))
        eventConsumer = EventConsumer(context, config: config.eventConsumer, acks: acks)
        eventAcknowledger = EventAcknowledger(context: context, acks: acks, startedAt: startedAt)
        retryTimer = RetryTimer(context: context, config: config.retryTimer)
        cronTicker = CronTicker(context: context, config: config.cronTicker)
        backfillRunner = BackfillRunner(context: context, config: config.backfillRunner, listen: PGConnection(sessionURL, label: "sched-backfills"))
        heartbeat = SchedulerHeartbeat(context: context, config: config.heartbeat, startedAt: startedAt)
        reaper = Reaper(context: context, config: config.reaper)
        unackedRestorer = UnackedRestorer(context: context, config: config.unackedRestorer)
        lostMessageRescuer = LostMessageRescuer(context: context, config: config.lostMessages)
        abandonedEventClaimer = AbandonedEventClaimer(consumer: eventConsumer, config: config.abandonedEvents)
        celeryResultCollector = CeleryResultCollector(context: context, config: config.celeryResults)
        runTimeoutEnforcer = RunTimeoutEnforcer(context: context, config: config.runTimeouts)
        retentionCleaner = RetentionCleaner(context: context, config: config.retentionCleaner)
        versionWatch = VersionWatch(context: context, config: config.versionWatch)
        notificationDeliverer = NotificationDeliverer(context: context, config: config.notificationDeliverer,
                                                      notifiers: Dictionary(notifiers.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a }),
                                                      connections: connections)
    }

    var logger: Logger { context.logger }

    /// Every duty, in the order they start.
    public var duties: [any SchedulerDuty] {
        [runStarter, poolAdmitter, flowTriggerService, eventConsumer, eventAcknowledger, retryTimer, cronTicker, backfillRunner, heartbeat,
         reaper, unackedRestorer, lostMessageRescuer, abandonedEventClaimer, celeryResultCollector, runTimeoutEnforcer, notificationDeliverer, retentionCleaner, versionWatch]
    }

    /// The duties as services, for a `ServiceGroup` (`flowctl scheduler` and `standalone` group
    /// them with the API and workers as they need).
    public func services() -> [DutyService] {
        duties.map { DutyService(duty: $0, leader: leader, context: context, followerPause: config.maintenanceInterval) }
    }

    /// Checks the configuration and the schema, and registers the flows: what a scheduler does
    /// before its duties start.
    public func prepare() async throws {
        try config.validate()
        try await Migrator.checkCurrent(listen)
        let changed = try await store.registerFlows(flows, importErrors: importErrors, reportedBy: config.name, now: context.clock.now())
        logger.info("registered \(flows.count) flows (\(changed.count) new versions)")
        for e in importErrors { logger.error("import error, flow not registered: \(e.message)") }
    }

    /// Prepares, then runs every duty until the task is cancelled.
    public func run() async throws {
        try await prepare()
        await withTaskGroup(of: Void.self) { g in
            for s in services() { g.addTask { await s.loop() } }
        }
    }

    /// Whether this scheduler leads (takes the lock when it is free).
    public func isLeader() async throws -> Bool { try await leader.isLeader() }
}
