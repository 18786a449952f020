public import ArgumentParser
public import FlowKit
import FlowServer
import Foundation
import WorkerRuntime

/// The `flowctl` command tree. A package with its own flows builds its own `flowctl` with a
/// `main.swift` of one line: `await FlowCtl.main(flows: myFlows)`.
public struct FlowCtl: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "flowctl",
        abstract: "FlowKit: declare data flows in Swift and run them.",
        version: "flowctl \(flowKitVersion)",
        subcommands: [
            StandaloneCommand.self, ServerCommand.self, SchedulerCommand.self, WorkerCommand.self, MigrateCommand.self,
            TriggerCommand.self, FlowsCommand.self, RunsCommand.self, LogsCommand.self, CronCommand.self, HealthCommand.self, BackfillCommand.self, ApprovalsCommand.self, BenchCommand.self, VenvCommand.self,
            TokensCommand.self, TasksCommand.self, PoolsCommand.self, NotificationsCommand.self, AssetsCommand.self, DbCommand.self, AuditCommand.self, WorkersCommand.self, DeadLettersCommand.self,
            ConnectionsCommand.self, VariablesCommand.self, SecretKeyCommand.self, DevCommand.self,
        ]
    )

    public init() {}

    /// Runs the command line with `flows` as the flows this binary knows.
    /// `notifiers`: custom notifiers (`Notifier`) that flows name as `.custom(name)`.
    public static func main(flows: [Flow], notifiers: [any Notifier] = []) async {
        FlowCatalog.flows = flows
        FlowCatalog.notifiers = notifiers
        do {
            let arguments = Self.takeConfigOptions()
            if let unknown = Self.unknownCommand(arguments) { fail(unknown, code: 2) }
            try ConfigFile.export()
            var command = try parseAsRoot(arguments)
            if var async = command as? any AsyncParsableCommand { try await async.run() } else { try command.run() }
        } catch let e as CLIError {
            fail(e.message, code: e.code)
        } catch let e as ConfigError {
            fail(e.message, code: 2)
        } catch {
            // Usage errors exit 2, as the docs promise; help and ExitCode keep their codes.
            if exitCode(for: error) == .validationFailure {
                FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
                Foundation.exit(2)
            }
            exit(withError: error)
        }
    }
}

extension FlowCtl {
    /// "unknown command `flowctl flow`; did you mean `flowctl flows`?" for a mistyped command
    /// word (ArgumentParser alone says "2 unexpected arguments"); nil when the words name commands.
    static func unknownCommand(_ args: [String]) -> String? {
        var type: any ParsableCommand.Type = FlowCtl.self
        var path = ["flowctl"]
        for word in args {
            let subs = type.configuration.subcommands
            guard !subs.isEmpty, !word.hasPrefix("-") else { return nil }
            let names = subs.map { $0._commandName }
            if let i = names.firstIndex(of: word) {
                type = subs[i]
                path.append(word)
                continue
            }
            // A command with a default subcommand takes other words as that subcommand's arguments.
            if type.configuration.defaultSubcommand != nil { return nil }
            let hint = nearest(word, among: names).map { "; did you mean `\((path + [$0]).joined(separator: " "))`?" } ?? ""
            return "unknown command `\((path + [word]).joined(separator: " "))`\(hint) (the commands: \(names.joined(separator: ", ")))"
        }
        return nil
    }

    /// `--config FILE` and `--profile NAME`, accepted anywhere on the command line, become
    /// `FLOWKIT_CONFIG` and `FLOWKIT_PROFILE`; the rest is parsed as usual.
    static func takeConfigOptions() -> [String] {
        var args = Array(CommandLine.arguments.dropFirst())
        for (flag, variable) in [("--config", "FLOWKIT_CONFIG"), ("--profile", "FLOWKIT_PROFILE")] {
            while let i = args.firstIndex(where: { $0 == flag || $0.hasPrefix(flag + "=") }) {
                if args[i].contains("=") {
                    setenv(variable, String(args[i].split(separator: "=", maxSplits: 1)[1]), 1)
                    args.remove(at: i)
                } else if i + 1 < args.count {
                    setenv(variable, args[i + 1], 1)
                    args.removeSubrange(i...(i + 1))
                } else {
                    break
                }
            }
        }
        return args
    }
}

/// The flows handed to `FlowCtl.main`, set once before the command line is parsed.
enum FlowCatalog {
    nonisolated(unsafe) static var flowsDeclared: [Flow] = []
    /// The binary's flows, each without a `version` of its own given `FLOWKIT_FLOWS_VERSION`'s
    /// (an image tag or a git commit: every run then runs on the code it started with).
    static var flows: [Flow] {
        get {
            guard let v = ProcessInfo.processInfo.environment["FLOWKIT_FLOWS_VERSION"], !v.isEmpty else { return flowsDeclared }
            return flowsDeclared.map { f in var f = f; if f.version == nil { f.version = v }; return f }
        }
        set { flowsDeclared = newValue }
    }
    nonisolated(unsafe) static var notifiers: [any Notifier] = []

    /// Every flow, or the first invalid one as an error (`flowctl flows validate`).
    static func registry() throws -> FlowRegistry {
        do { return try FlowRegistry(flows) } catch {
            throw CLIError("invalid flow: \(error)")
        }
    }

    /// The valid flows, the invalid ones set aside as import errors and said on stderr: what
    /// schedulers, workers and standalone start with, so that one broken flow stops no other.
    static func admitted() -> FlowRegistry {
        let r = FlowRegistry(admitting: flows)
        for e in r.importErrors {
            FileHandle.standardError.write(Data("import error: flow `\(e.flowId)` is not registered: \(e.message)\n".utf8))
        }
        return r
    }
}

/// An error shown to the user as one line, with the exit code it deserves.
struct CLIError: Error, CustomStringConvertible {
    let message: String
    let code: Int32
    /// A failure worth trying again: the API answered too slowly, or said it is busy (503).
    var transient = false
    init(_ message: String, code: Int32 = 1, transient: Bool = false) { self.message = message; self.code = code; self.transient = transient }
    var description: String { message }
}

/// Prints `message` on stderr and exits with `code`.
func fail(_ message: String, code: Int32 = 1) -> Never {
    FileHandle.standardError.write(Data(("error: " + message + "\n").utf8))
    exit(code)
}
