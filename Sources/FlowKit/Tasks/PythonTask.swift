public import Foundation

/// A Python task (`FlowBuilder.python`): a function of a Python file, called by a worker in a
/// subprocess with the try's context; its return value (JSON) is the task's result.
public struct PythonTaskSpec: Sendable, Codable, Hashable {
    /// The file as the flow names it (for messages and the log).
    public var file: String
    /// The file's source, read when the flow is defined: editing it makes a new flow version,
    /// and a worker runs exactly the code its version was registered with.
    public var source: String
    /// The function called with the context.
    public var function: String
    /// Packages for a virtualenv the worker builds once per distinct set (pip requirement lines).
    public var requirements: [String]?
    /// An existing interpreter to run it with (Airflow's `external_python`).
    public var python: String?
    /// Why the task cannot run (its file could not be read); validation refuses the flow with it.
    public var problem: String?

    public init(file: String, source: String, function: String, requirements: [String]? = nil, python: String? = nil, problem: String? = nil) {
        self.file = file; self.source = source; self.function = function
        self.requirements = requirements; self.python = python; self.problem = problem
    }
}

extension FlowBuilder {
    /// A Python task: `function` of `file` (a path relative to `resources`, the flows package's
    /// resource directory, or an absolute one; read when the flow is defined) is called on a
    /// worker as `function(context)` in a Python subprocess. `context` carries the run id, flow,
    /// task, try number, logical date and data interval, params, the direct upstream results and
    /// `context.log(…)`; `print` and logging output become the task's log, live. The value it
    /// returns, as JSON, is the task's result; an exception fails the try with its last line as
    /// the error and the traceback in the log. Cancel and timeout kill the process group.
    ///
    /// The interpreter: with `requirements` (or `requirementsFile`, read when the flow is
    /// defined), a virtualenv the worker builds once per distinct set, under its home; with
    /// `python`, that interpreter (`/opt/venv/bin/python`); otherwise `python3` on the PATH.
    @discardableResult
    public func python(_ id: String, file: String, function: String = "main", resources: URL? = nil, requirements: [String]? = nil,
                       requirementsFile: String? = nil, python: String? = nil, after upstream: [TaskRef] = [], description: String = "",
                       retry: RetryPolicy? = nil, timeout: Duration? = nil, queue: String? = nil, priority: Int? = nil,
                       triggerRule: TriggerRule? = nil, pool: String? = nil, connections: [String] = [], variables: [String] = [], fileID: String = #fileID, line: Int = #line) -> TaskRef {
        declaring(fileID, line)
        func url(_ path: String) -> URL {
            path.hasPrefix("/") || resources == nil ? URL(fileURLWithPath: path) : resources!.appendingPathComponent(path)
        }
        var spec = PythonTaskSpec(file: file, source: "", function: function, requirements: requirements, python: python)
        do {
            spec.source = try String(contentsOf: url(file), encoding: .utf8)
        } catch {
            spec.problem = "task `\(id)` cannot read its Python file \(url(file).path): \(error.localizedDescription)"
        }
        if let requirementsFile {
            do {
                let lines = try String(contentsOf: url(requirementsFile), encoding: .utf8).split(whereSeparator: \.isNewline)
                    .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty && !$0.hasPrefix("#") }
                spec.requirements = (spec.requirements ?? []) + lines
            } catch {
                spec.problem = "task `\(id)` cannot read its requirements file \(url(requirementsFile).path): \(error.localizedDescription)"
            }
        }
        if spec.requirements != nil && python != nil {
            spec.problem = "task `\(id)`: give `requirements` (a virtualenv the worker builds) or `python` (an existing interpreter), not both"
        }
        if spec.problem == nil && !function.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) {
            spec.problem = "task `\(id)`: `\(function)` is not a Python function name"
        }
        return add(FlowTask(id: id, body: .python(spec), upstream: upstream.map(\.id),
                            options: .init(retry: retry, timeout: timeout, queue: queue, priority: priority, triggerRule: triggerRule, pool: pool),
                            description: description)).needs(connections: connections, variables: variables)
    }
}
