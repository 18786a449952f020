import ArgumentParser
import FlowKit
import Foundation
import PostgresClient
import Scheduler

/// `flowctl db clean`: retention by hand (Airflow's `airflow db clean`), on the database itself.
struct DbCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "db", abstract: "Database maintenance.", subcommands: [Clean.self])

    struct Clean: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete finished runs older than a cutoff, with their task instances, tries, history, logs and notifications.",
            discussion: """
                Runs that are queued or running are never deleted. Deletes in batches, each a short transaction that \
                skips rows a scheduler holds, so it can run while FlowKit works. Needs FLOWKIT_DATABASE_URL.
                """)
        @Option(help: "Delete runs that ended longer ago than this: 90m, 12h, 30d, 2w.") var olderThan: String
        @Option(help: "Only these flows, comma-separated.") var flows: String?
        @Option(help: "Runs per batch (transaction).") var batch: Int = 500
        @Flag(help: "Count what would be deleted; delete nothing.") var dryRun = false
        @Flag(name: .shortAndLong, help: "Do not ask for confirmation.") var yes = false

        func validate() throws {
            guard (1...10_000).contains(batch) else { throw ValidationError("--batch must be 1...10000") }
            _ = try duration()
        }

        func duration() throws -> Double {
            do { return try parseDuration(olderThan) } catch { throw ValidationError("--older-than: `\(olderThan)` is not a duration such as 30d, 12h or 2w") }
        }

        func run() async throws {
            let settings = try Settings.fromEnvironment()
            let store = SchedulerStore(db: PGPool(try settings.databaseOrLocal(), size: 1, label: "db-clean"))
            let cutoff = Date().addingTimeInterval(-(try duration()))
            let only = flows.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } }
            let scope = "finished runs that ended before \(Instant.format(cutoff)) (UTC)" + (only.map { " of \($0.joined(separator: ", "))" } ?? "")
            let counted = try await store.cleanHistory(before: cutoff, flows: only, dryRun: true)
            if dryRun || counted.runs == 0 {
                print("\(dryRun ? "would delete" : "nothing to delete:") \(counted.runs) \(scope): \(counted.taskInstances) task instances, \(counted.logLines) log lines")
                return
            }
            if !yes {
                guard isatty(0) != 0 else { throw CLIError("refusing to delete \(counted.runs) runs without --yes (stdin is not a terminal)", code: 2) }
                print("delete \(counted.runs) \(scope) (\(counted.taskInstances) task instances, \(counted.logLines) log lines)? [y/N] ", terminator: "")
                guard let answer = readLine(), ["y", "yes"].contains(answer.lowercased()) else { print("nothing deleted"); return }
            }
            let started = Date()
            let r = try await store.cleanHistory(before: cutoff, flows: only, batch: batch)
            try await store.recordAudit(actor: localActor(), action: "db_clean", target: only?.joined(separator: ",") ?? "*",
                                        detail: ["before": .string(Instant.format(cutoff)), "runs": .int(r.runs)], now: Date())
            print("deleted \(r.runs) \(scope): \(r.taskInstances) task instances, \(r.logLines) log lines, in \(r.batches) batches, \(String(format: "%.2f", Date().timeIntervalSince(started))) s")
        }
    }
}
