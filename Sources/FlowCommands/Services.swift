import FlowKit
import FlowServer
import Foundation
import Hummingbird
import Logging
import RedisClient
import Scheduler
import ServiceLifecycle
import WorkerRuntime
import UnixSignals

/// A worker as a `Service`: graceful shutdown stops taking work and drains.
struct WorkerService: Service {
    let worker: Worker
    func run() async throws {
        try await withGracefulShutdownHandler {
            try await worker.run()
        } onGracefulShutdown: {
            worker.shutdown()
        }
    }
}

/// Runs services until SIGTERM or SIGINT, then shuts them down gracefully.
func runServices(_ services: [any Service], logger: Logger) async throws {
    let group = ServiceGroup(configuration: .init(services: services.map { .init(service: $0) },
                                                  gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
    try await group.run()
}

func makeLogger(_ label: String) -> Logger {
    LoggingSystem.bootstrapOnce()
    var l = Logger(label: label)
    l.logLevel = ProcessInfo.processInfo.environment["FLOWKIT_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .info
    return l
}

extension LoggingSystem {
    private static let once: Void = {
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = ProcessInfo.processInfo.environment["FLOWKIT_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .info
            return h
        }
    }()
    static func bootstrapOnce() { _ = once }
}
