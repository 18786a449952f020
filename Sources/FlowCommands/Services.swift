import ArgumentParser
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
        // A graceful shutdown drains the worker; so does a cancellation (another service of the
        // group failed, e.g. the API could not bind its port): a cancelled worker must not keep
        // claiming tasks, nor spin on sleeps that return at once.
        try await withTaskCancellationHandler {
            try await withGracefulShutdownHandler {
                try await worker.run()
            } onGracefulShutdown: {
                worker.shutdown()
            }
        } onCancel: {
            worker.shutdown()
        }
    }
}

/// Fails with a message naming the address when nothing can listen on it (another process has
/// it), before anything is started or announced.
func ensureCanListen(host: String, port: Int) throws {
    var hints = addrinfo(ai_flags: AI_PASSIVE, ai_family: AF_UNSPEC, ai_socktype: Int32(SOCK_STREAM.rawValue), ai_protocol: 0,
                         ai_addrlen: 0, ai_addr: nil, ai_canonname: nil, ai_next: nil)
    var res: UnsafeMutablePointer<addrinfo>?
    guard getaddrinfo(host, String(port), &hints, &res) == 0, let ai = res else {
        throw ValidationError("--host \(host) is not an address this machine can listen on")
    }
    defer { freeaddrinfo(res) }
    let fd = socket(ai.pointee.ai_family, ai.pointee.ai_socktype, ai.pointee.ai_protocol)
    guard fd >= 0 else { return }
    defer { close(fd) }
    var one: Int32 = 1
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    if bind(fd, ai.pointee.ai_addr, ai.pointee.ai_addrlen) != 0 {
        let why = String(cString: strerror(errno))
        throw CLIError("cannot listen on \(host):\(port): \(why.lowercased()) (another flowctl standalone or server? --port picks another port)")
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
