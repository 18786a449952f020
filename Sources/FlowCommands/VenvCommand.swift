import ArgumentParser
import FlowKit
import Foundation
import ProcessSupport
import WorkerRuntime

/// `flowctl venv`: builds, ahead of the first task, the virtualenv a worker builds for a Python or
/// dbt task — where PyPI is reachable, or to bake it into an image — at the very path the worker
/// uses (`$FLOWKIT_HOME/venvs/<hash of the requirements>`), and prints its interpreter.
struct VenvCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "venv",
        abstract: "Build the virtualenv a worker uses for Python/dbt tasks (default: dbt's pinned dbt-core and dbt-postgres).",
        discussion: "Built under $FLOWKIT_HOME/venvs (default .flowkit/venvs), once per requirement set, as workers do; prints its python.")

    @Option(name: .customLong("requirement"), help: "A pip requirement line (repeatable); default: \(defaultDbtRequirements.joined(separator: " "))")
    var requirements: [String] = []

    func run() async throws {
        let reqs = requirements.isEmpty ? defaultDbtRequirements : requirements
        let home = WorkerConfig().home
        let python = try await Virtualenvs(home: home).python(for: reqs, log: TaskLogger { FileHandle.standardError.write(Data(($0 + "\n").utf8)) },
                                                               runner: SubprocessCommandRunner(), isCancelled: { false })
        print(python)
    }
}
