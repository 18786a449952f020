public import Foundation

/// The dbt versions a dbt task's virtualenv gets unless the flow names its own.
public let defaultDbtRequirements = ["dbt-core==1.10.15", "dbt-postgres==1.9.1"]

/// A dbt command (`FlowBuilder.dbt`).
public enum DbtCommand: String, Sendable, Codable, Hashable {
    case build, run, test, seed, snapshot
}

/// A dbt task: one dbt command over a project shipped with the flows, run by a worker in a
/// virtualenv holding dbt-core and an adapter.
public struct DbtTaskSpec: Sendable, Codable, Hashable {
    /// The project directory and the profiles directory, as the flow names them.
    public var project: String
    public var profilesDir: String?
    public var target: String?
    public var command: DbtCommand
    public var select: [String]
    public var exclude: [String]
    public var vars: [String: JSONValue]?
    public var fullRefresh: Bool
    /// pip requirement lines of the virtualenv (dbt-core and the adapter).
    public var requirements: [String]
    /// SHA-256 of the project's files when the flow was defined: a changed model, test or
    /// setting makes a new flow version, so version-safe execution covers the dbt project too.
    public var projectHash: String
    public var problem: String?
    /// Where the project and profiles are on this host (resolved when the flow is defined;
    /// not part of the definition, which must be the same on every host).
    public var projectURL: URL?
    public var profilesURL: URL?

    enum CodingKeys: String, CodingKey {
        case project, profilesDir, target, command, select, exclude, vars, fullRefresh, requirements, projectHash, problem
    }

    /// Equal when their definitions are: the host's paths are no part of it.
    public static func == (a: Self, b: Self) -> Bool {
        a.project == b.project && a.profilesDir == b.profilesDir && a.target == b.target && a.command == b.command
            && a.select == b.select && a.exclude == b.exclude && a.fullRefresh == b.fullRefresh && a.requirements == b.requirements
            && a.projectHash == b.projectHash && a.problem == b.problem && a.vars == b.vars
    }

    public func hash(into h: inout Hasher) {
        h.combine(project); h.combine(command); h.combine(select); h.combine(projectHash)
    }

    /// Hashes every file of a dbt project that shapes what it builds (not `target/`, `logs/`,
    /// `dbt_packages/`), path and content, in a stable order.
    public static func hashProject(_ dir: URL) throws -> String {
        let fm = FileManager.default
        guard let e = fm.enumerator(at: dir, includingPropertiesForKeys: [.isRegularFileKey], options: [.skipsHiddenFiles]) else {
            throw TaskError("cannot read the dbt project \(dir.path)")
        }
        var files: [(String, Data)] = []
        let base = dir.standardizedFileURL.path
        for case let url as URL in e {
            let rel = String(url.standardizedFileURL.path.dropFirst(base.count + 1))
            if ["target", "logs", "dbt_packages"].contains(where: { rel == $0 || rel.hasPrefix($0 + "/") }) {
                if (try? url.resourceValues(forKeys: [.isDirectoryKey]).isDirectory) == true { e.skipDescendants() }
                continue
            }
            guard (try? url.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == true else { continue }
            files.append((rel, try Data(contentsOf: url)))
        }
        guard files.contains(where: { $0.0 == "dbt_project.yml" }) else { throw TaskError("\(dir.path) has no dbt_project.yml") }
        var all = Data()
        for (rel, data) in files.sorted(by: { $0.0 < $1.0 }) {
            all.append(Data("\(rel)\n\(data.count)\n".utf8))
            all.append(data)
        }
        return SHA256.hex(all)
    }
}

/// A group of tasks made from a dbt project (`FlowBuilder.dbtModels`): `upstream --> group`
/// makes its first models wait for `upstream`; `group --> downstream` waits for its last tests.
public struct TaskGroupRef {
    public let prefix: String
    /// The group's tasks with no upstream task inside it, and those with no downstream one.
    public let entries: [TaskRef]
    public let exits: [TaskRef]
    public let tasks: [TaskRef]
}

@discardableResult
public func --> (lhs: TaskRef, rhs: TaskGroupRef) -> TaskGroupRef {
    for e in rhs.entries { lhs --> e }
    return rhs
}

@discardableResult
public func --> (lhs: TaskGroupRef, rhs: TaskRef) -> TaskRef {
    for x in lhs.exits { x --> rhs }
    return rhs
}

@discardableResult
public func --> (lhs: TaskGroupRef, rhs: TaskGroupRef) -> TaskGroupRef {
    for x in lhs.exits { for e in rhs.entries { x --> e } }
    return rhs
}

extension FlowBuilder {
    /// A dbt task: `dbt <command>` over the project at `project` (relative to `resources`, or
    /// absolute), with `profilesDir` (default: the project directory) and `target`, limited by
    /// `select`/`exclude`, on a worker, in a virtualenv with `requirements` (default: pinned
    /// dbt-core and dbt-postgres) that the worker builds once. Named connections reach the profile
    /// as environment variables: `FLOWKIT_CONN_<NAME>` and its parts `…_HOST`, `…_PORT`, `…_USER`,
    /// `…_PASSWORD`, `…_DBNAME` (`env_var('FLOWKIT_CONN_WAREHOUSE_HOST')`). The result comes from
    /// dbt's `run_results.json`: `{"models": N, "tests": M, "seeds": S, "failed": [],` and each model
    /// or seed built with the rows it holds, `"daily_station_averages": 210, …}`; a failed
    /// model or test fails the task naming it and its compiled SQL, with dbt's output in the log.
    @discardableResult
    public func dbt(_ id: String, project: String, resources: URL? = nil, profilesDir: String? = nil, target: String? = nil,
                    command: DbtCommand = .build, select: [String] = [], exclude: [String] = [], vars: [String: JSONValue]? = nil,
                    fullRefresh: Bool = false, requirements: [String] = defaultDbtRequirements, after upstream: [TaskRef] = [],
                    description: String = "", retry: RetryPolicy? = nil, timeout: Duration? = nil, queue: String? = nil,
                    priority: Int? = nil, triggerRule: TriggerRule? = nil, pool: String? = nil, connections: [String] = [], fileID: String = #fileID, line: Int = #line) -> TaskRef {
        declaring(fileID, line)
        let spec = Self.dbtSpec(project: project, resources: resources, profilesDir: profilesDir, target: target, command: command,
                                select: select, exclude: exclude, vars: vars, fullRefresh: fullRefresh, requirements: requirements, task: id)
        return add(FlowTask(id: id, body: .dbt(spec), upstream: upstream.map(\.id),
                            options: .init(retry: retry, timeout: timeout, queue: queue, priority: priority, triggerRule: triggerRule, pool: pool),
                            description: description)).needs(connections: connections)
    }

    /// A dbt project as a task group, as Cosmos makes one: for each model of `manifest` (dbt's
    /// `target/manifest.json`, read when the flow is defined) a task `<group>.<model>` running
    /// `dbt run --select <model>`, then `<group>.<model>.test` running its tests
    /// (`dbt test --select <model>`), wired by the manifest's `depends_on`: a model waits for the
    /// tests of the models it depends on. Seeds the models use run first, as `<group>.<seed>`
    /// (`dbt seed --select <seed>`). A changed manifest makes a new flow version.
    @discardableResult
    public func dbtModels(_ group: String, project: String, manifest: String, resources: URL? = nil, profilesDir: String? = nil,
                          target: String? = nil, requirements: [String] = defaultDbtRequirements, retry: RetryPolicy? = nil,
                          timeout: Duration? = nil, queue: String? = nil, pool: String? = nil, connections: [String] = [], fileID: String = #fileID, line: Int = #line) -> TaskGroupRef {
        declaring(fileID, line)
        defer { location = nil }
        func url(_ p: String) -> URL { p.hasPrefix("/") || resources == nil ? URL(fileURLWithPath: p) : resources!.appendingPathComponent(p) }
        var made: [String: (run: TaskRef, last: TaskRef)] = [:]
        var all: [TaskRef] = []
        func task(_ id: String, _ command: DbtCommand, _ name: String) -> TaskRef {
            let r = dbt(id, project: project, resources: resources, profilesDir: profilesDir, target: target, command: command, select: [name],
                        requirements: requirements, description: "dbt \(command.rawValue) --select \(name)", retry: retry, timeout: timeout,
                        queue: queue, pool: pool, connections: connections, fileID: fileID, line: line)
            all.append(r)
            return r
        }
        let nodes: [DbtManifestNode]
        do {
            nodes = try DbtManifestNode.read(url(manifest))
        } catch {
            // The flow is refused with the reason (validation reads the task's problem).
            var spec = Self.dbtSpec(project: project, resources: resources, profilesDir: profilesDir, target: target, command: .build,
                                    select: [], exclude: [], vars: nil, fullRefresh: false, requirements: requirements, task: group)
            spec.problem = "dbt group `\(group)`: \(error)"
            declaring(fileID, line)
            let r = add(FlowTask(id: "\(group).manifest", body: .dbt(spec)))
            return TaskGroupRef(prefix: group, entries: [r], exits: [r], tasks: [r])
        }
        var pending = nodes.filter { $0.kind == "seed" || $0.kind == "model" }
        // In dependency order: a node once every node it depends on inside the project is made.
        while !pending.isEmpty {
            let ready = pending.filter { n in n.dependsOn.allSatisfy { d in made[d] != nil || !pending.contains { $0.uniqueId == d } } }
            guard !ready.isEmpty else { break }
            for n in ready {
                let run: TaskRef
                var last: TaskRef
                if n.kind == "seed" {
                    run = task("\(group).\(n.name)", .seed, n.name)
                    last = run
                } else {
                    run = task("\(group).\(n.name)", .run, n.name)
                    last = run
                    if n.hasTests { last = task("\(group).\(n.name).test", .test, n.name); run --> last }
                }
                for d in n.dependsOn { if let up = made[d] { up.last --> run } }
                made[n.uniqueId] = (run, last)
            }
            pending.removeAll { n in ready.contains { $0.uniqueId == n.uniqueId } }
        }
        let ids = Set(all.map(\.id))
        let entries = all.filter { r in tasks[r.index].upstream.allSatisfy { !ids.contains($0) } }
        let exits = all.filter { r in !all.contains { tasks[$0.index].upstream.contains(r.id) } }
        return TaskGroupRef(prefix: group, entries: entries, exits: exits, tasks: all)
    }

    static func dbtSpec(project: String, resources: URL?, profilesDir: String?, target: String?, command: DbtCommand, select: [String],
                        exclude: [String], vars: [String: JSONValue]?, fullRefresh: Bool, requirements: [String], task id: String) -> DbtTaskSpec {
        func url(_ p: String) -> URL { p.hasPrefix("/") || resources == nil ? URL(fileURLWithPath: p) : resources!.appendingPathComponent(p) }
        var spec = DbtTaskSpec(project: project, profilesDir: profilesDir, target: target, command: command, select: select, exclude: exclude,
                               vars: vars, fullRefresh: fullRefresh, requirements: requirements, projectHash: "", problem: nil,
                               projectURL: url(project), profilesURL: profilesDir.map(url))
        do { spec.projectHash = try DbtTaskSpec.hashProject(url(project)) } catch { spec.problem = "task `\(id)`: \(error)" }
        if requirements.isEmpty { spec.problem = "task `\(id)`: a dbt task needs dbt-core and an adapter in `requirements`" }
        return spec
    }
}

/// A model, seed or test of a dbt manifest, as `dbtModels` reads it.
struct DbtManifestNode {
    var uniqueId: String
    var name: String
    var kind: String
    var dependsOn: [String]
    var hasTests: Bool

    static func read(_ url: URL) throws -> [DbtManifestNode] {
        let data: Data
        do { data = try Data(contentsOf: url) } catch { throw TaskError("cannot read the manifest \(url.path): \(error.localizedDescription)") }
        guard let nodes = try JSONValue.parse(data)["nodes"]?.objectValue else {
            throw TaskError("\(url.path) is not a dbt manifest: it has no `nodes`")
        }
        var tested = Set<String>()
        for (_, n) in nodes where n["resource_type"]?.stringValue == "test" {
            for d in n["depends_on"]?["nodes"]?.arrayValue ?? [] { if let s = d.stringValue { tested.insert(s) } }
        }
        return nodes.compactMap { (id, n) -> DbtManifestNode? in
            guard let kind = n["resource_type"]?.stringValue, kind == "model" || kind == "seed", let name = n["name"]?.stringValue else { return nil }
            let deps = (n["depends_on"]?["nodes"]?.arrayValue ?? []).compactMap(\.stringValue)
            return DbtManifestNode(uniqueId: id, name: name, kind: kind, dependsOn: deps, hasTests: tested.contains(id))
        }.sorted { $0.uniqueId < $1.uniqueId }
    }
}
