import Foundation

extension Flow {
    /// Checks the flow as the scheduler will when it registers it: ids, duplicates, unknown
    /// upstream tasks, cycles, schedule and options.
    public func validate() throws {
        guard Self.isValidFlowId(id) else { throw FlowValidationError.invalidFlowId(id) }
        guard !tasks.isEmpty else { throw FlowValidationError.emptyFlow(id) }
        var seen = Set<String>()
        for t in tasks {
            guard Self.isValidTaskId(t.id) else { throw FlowValidationError.invalidTaskId(flow: id, task: t.id) }
            guard seen.insert(t.id).inserted else { throw FlowValidationError.duplicateTask(flow: id, task: t.id) }
        }
        for t in tasks {
            for u in t.upstream where !seen.contains(u) {
                throw FlowValidationError.unknownUpstream(flow: id, task: t.id, upstream: u,
                                                          suggestion: nearest(u, among: seen.sorted()))
            }
        }
        if let cycle = findCycle() { throw FlowValidationError.cycle(flow: id, path: cycle) }
        if let schedule {
            do { _ = try schedule.compiled() } catch let e as CronError {
                throw FlowValidationError.invalidSchedule(flow: id, error: e)
            }
        }
        if maxActiveRuns < 1 { throw FlowValidationError.invalidOption(flow: id, detail: "max_active_runs must be ≥ 1, got \(maxActiveRuns)") }
        if let d = deadline, !(d.seconds > 0) { throw FlowValidationError.invalidOption(flow: id, detail: "deadline must be positive, got \(d.seconds)s") }
        if let t = runTimeout, t <= .zero { throw FlowValidationError.invalidOption(flow: id, detail: "runTimeout must be positive, got \(t)") }
        try defaults.retry?.validate(flow: id, task: nil)
        for t in tasks {
            try t.options.retry?.validate(flow: id, task: t.id)
            if let s = t.options.timeoutSeconds, s <= 0 {
                throw FlowValidationError.invalidOption(flow: id, detail: "task `\(t.id)`: timeout must be positive")
            }
            if case .shell(let cmd) = t.body, cmd.argv.isEmpty {
                throw FlowValidationError.invalidOption(flow: id, detail: "task `\(t.id)`: shell command is empty")
            }
            if case .python(let spec) = t.body, let problem = spec.problem {
                throw FlowValidationError.invalidOption(flow: id, detail: problem)
            }
            if case .dbt(let spec) = t.body, let problem = spec.problem {
                throw FlowValidationError.invalidOption(flow: id, detail: problem)
            }
            if case .s3(let spec) = t.body, let problem = spec.problem(task: t.id) {
                throw FlowValidationError.invalidOption(flow: id, detail: problem)
            }
            if case .sql(let spec) = t.body {
                if let problem = spec.problem { throw FlowValidationError.invalidOption(flow: id, detail: problem) }
                if spec.connection.isEmpty { throw FlowValidationError.invalidOption(flow: id, detail: "task `\(t.id)`: a SQL task names its connection") }
            }
        }
        var params = Set<String>()
        for p in self.params where !params.insert(p.name).inserted {
            throw FlowValidationError.invalidOption(flow: id, detail: "param `\(p.name)` is declared twice")
        }
        for t in tasks { try validateMapping(t); try validateLimits(t); try validateSensor(t); try validateTriggerFlow(t); try validateApproval(t) }
        for a in after {
            guard Self.isValidFlowId(a.flow) else { throw FlowValidationError.invalidOption(flow: id, detail: "after: `\(a.flow)` is not a flow id") }
            guard a.flow != id else { throw FlowValidationError.invalidOption(flow: id, detail: "after: a flow cannot be triggered by its own runs") }
        }
        for uri in assets + tasks.flatMap({ $0.options.outlets ?? [] }) where !Self.isValidAssetURI(uri) {
            throw FlowValidationError.invalidOption(flow: id, detail: "asset `\(uri)` is not a URI: use scheme://name, e.g. warehouse://marts.daily")
        }
        if let n = maxActiveTasks, n < 1 { throw FlowValidationError.invalidOption(flow: id, detail: "maxActiveTasks must be ≥ 1, got \(n)") }
        for p in self.params { if let d = p.defaultValue, !p.accepts(d) {
            throw FlowValidationError.invalidOption(flow: id, detail: "param `\(p.name)`: default \(d.compactJSON) is not of type \(p.kind.rawValue)")
        } }
    }

    /// A mapped task maps over a direct upstream task's result or a declared list param, within
    /// the cap's limits, and runs as a Swift or shell task.
    func validateMapping(_ t: FlowTask) throws {
        guard let source = t.mapOver else { return }
        func refuse(_ why: String) -> FlowValidationError { .invalidOption(flow: id, detail: "mapped task `\(t.id)`: \(why)") }
        switch source {
        case .result(let u):
            guard t.upstream.contains(u) else { throw refuse("maps over `\(u)`, which is not one of its upstream tasks") }
        case .param(let name):
            guard let p = params.first(where: { $0.name == name }) else {
                let hint = nearest(name, among: params.map(\.name)).map { "; did you mean `\($0)`?" } ?? ""
                throw refuse("maps over param `\(name)`, which the flow does not declare\(hint)")
            }
            guard p.kind == .array else { throw refuse("maps over param `\(name)` of type \(p.kind.rawValue); declare it .array") }
        }
        let cap = t.maxMapLength ?? defaultMaxMapLength
        guard (1...maxMapLengthLimit).contains(cap) else { throw refuse("maxItems must be 1...\(maxMapLengthLimit), got \(cap)") }
        switch t.body {
        case .closure, .shell: break
        case .celery, .branch, .sensor, .triggerFlow, .sql, .python, .dbt, .s3, .approval: throw refuse("only Swift and shell tasks can be mapped")
        }
    }

    /// A trigger-flow task names a valid flow id, and takes its conf from a direct upstream task.
    func validateTriggerFlow(_ t: FlowTask) throws {
        guard case .triggerFlow(let spec) = t.body else { return }
        func refuse(_ why: String) -> FlowValidationError { .invalidOption(flow: id, detail: "trigger task `\(t.id)`: \(why)") }
        guard Self.isValidFlowId(spec.flow) else { throw refuse("`\(spec.flow)` is not a flow id") }
        if let u = spec.confFromResultOf, !t.upstream.contains(u) { throw refuse("takes its conf from `\(u)`, which is not one of its upstream tasks") }
        guard t.options.queue == TriggerFlowSpec.internalQueue else { throw refuse("runs on the scheduler; it has no queue of its own") }
    }

    /// An approval offers options (a branch one: its direct downstream tasks), a positive
    /// timeout, a timeout param the flow declares, form fields with distinct names, and runs on
    /// the scheduler.
    func validateApproval(_ t: FlowTask) throws {
        guard case .approval(let spec) = t.body else { return }
        func refuse(_ why: String) -> FlowValidationError { .invalidOption(flow: id, detail: "approval `\(t.id)`: \(why)") }
        guard !spec.options.isEmpty else { throw refuse("offers no options") }
        guard Set(spec.options).count == spec.options.count else { throw refuse("offers an option twice") }
        if spec.options.contains(where: { $0.isEmpty }) { throw refuse("an option is empty") }
        if spec.onTimeout == .approve && spec.approveOption == nil { throw refuse("onTimeout: .approve, but every option rejects") }
        if spec.branch {
            let downstream = Set(tasks.filter { $0.upstream.contains(t.id) }.map(\.id))
            for o in spec.options where !spec.rejectOptions.contains(o) && !downstream.contains(o) {
                throw refuse("branches to `\(o)`, which is not one of its direct downstream tasks")
            }
        }
        if let s = spec.timeoutSeconds, !(s > 0) { throw refuse("timeout must be positive") }
        if let p = spec.timeoutParam {
            guard let param = params.first(where: { $0.name == p }) else { throw refuse("timeoutParam `\(p)` is not a param of the flow") }
            guard param.kind == .number || param.kind == .int else { throw refuse("timeoutParam `\(p)` must be an int or number param") }
        }
        guard Set(spec.form.map(\.name)).count == spec.form.count else { throw refuse("two form fields have the same name") }
        guard t.options.queue == TriggerFlowSpec.internalQueue else { throw refuse("runs on the scheduler; it has no queue of its own") }
    }

    /// A sensor pokes at a positive interval within a positive timeout; its timeout param and
    /// watched flow are well-formed.
    func validateSensor(_ t: FlowTask) throws {
        guard case .sensor(let spec, _) = t.body else { return }
        func refuse(_ why: String) -> FlowValidationError { .invalidOption(flow: id, detail: "sensor `\(t.id)`: \(why)") }
        guard spec.pokeIntervalSeconds > 0 else { throw refuse("pokeInterval must be positive") }
        guard spec.timeoutSeconds > 0 else { throw refuse("timeout must be positive") }
        if let p = spec.timeoutParam {
            guard let param = params.first(where: { $0.name == p }) else { throw refuse("timeoutParam `\(p)` is not a param of the flow") }
            guard param.kind == .number || param.kind == .int else { throw refuse("timeoutParam `\(p)` must be an int or number param") }
        }
        if let f = spec.externalFlow, !Self.isValidFlowId(f) { throw refuse("waits for `\(f)`, which is not a valid flow id") }
    }

    /// Pool names are identifiers; slots and per-flow caps are positive. (Whether the pool
    /// exists is checked when the scheduler registers the flow.)
    func validateLimits(_ t: FlowTask) throws {
        let o = t.options.merged(over: defaults)
        func refuse(_ why: String) -> FlowValidationError { .invalidOption(flow: id, detail: "task `\(t.id)`: \(why)") }
        if let p = o.pool, !Self.isValidPoolName(p) { throw refuse("pool name `\(p)` is invalid: use letters, digits, `_`, `-` and `.`") }
        if let n = o.poolSlots {
            guard o.pool != nil else { throw refuse("poolSlots is set but no pool is") }
            guard n >= 1 else { throw refuse("poolSlots must be ≥ 1, got \(n)") }
        }
        if let n = o.maxActiveTisPerFlow, n < 1 { throw refuse("maxActiveTisPerFlow must be ≥ 1, got \(n)") }
        for (what, names) in [("connection", t.neededConnections), ("variable", t.neededVariables)] {
            for n in names where !TaskNeeds.isValidName(n) {
                throw refuse("\(what) name `\(n)` is invalid: use 1–250 letters, digits, `_`, `-` and `.`")
            }
        }
    }

    /// An asset URI: `scheme://rest`, the scheme lowercase letters, digits, `+`, `-` or `.`.
    public static func isValidAssetURI(_ s: String) -> Bool {
        guard s.count <= 500, let r = s.range(of: "://"), r.lowerBound > s.startIndex, r.upperBound < s.endIndex else { return false }
        let scheme = s[..<r.lowerBound]
        return scheme.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || "+-.".unicodeScalars.contains($0) }
            && !s.unicodeScalars.contains { $0.value < 0x21 }
    }

    /// A pool name: 1–100 letters, digits, `_`, `-` and `.`.
    public static func isValidPoolName(_ s: String) -> Bool {
        !s.isEmpty && s.count <= 100 && s.unicodeScalars.allSatisfy {
            ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "_" || $0 == "-" || $0 == "."
        }
    }

    static func isValidFlowId(_ s: String) -> Bool {
        guard let first = s.unicodeScalars.first, ("a"..."z").contains(first), s.count <= 200 else { return false }
        return s.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "_" }
    }

    static func isValidTaskId(_ s: String) -> Bool {
        guard let first = s.unicodeScalars.first, first.properties.isASCIIHexDigit || ("a"..."z").contains(first) || ("A"..."Z").contains(first),
              !("0"..."9").contains(first), s.count <= 200 else { return false }
        // Dots name a task inside a group (`marts.orders.test`, as Airflow's task groups do).
        guard !s.hasSuffix("."), !s.contains("..") else { return false }
        return s.unicodeScalars.allSatisfy {
            ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "_" || $0 == "-" || $0 == "."
        }
    }

    /// The first cycle found, as a path that starts and ends at the same task.
    func findCycle() -> [String]? {
        let upstreamOf = Dictionary(uniqueKeysWithValues: tasks.map { ($0.id, $0.upstream) })
        var color: [String: Int] = [:]  // 0 unvisited, 1 on stack, 2 done
        var stack: [String] = []
        func visit(_ n: String) -> [String]? {
            color[n] = 1
            stack.append(n)
            for u in upstreamOf[n] ?? [] {
                if color[u] == 1 {
                    // Report in execution order: upstream → downstream.
                    let start = stack.firstIndex(of: u)!
                    let loop = Array(stack[start...]).reversed() + [stack.last!]
                    return Array(loop)
                }
                if color[u, default: 0] == 0, let c = visit(u) { return c }
            }
            stack.removeLast()
            color[n] = 2
            return nil
        }
        for t in tasks where color[t.id, default: 0] == 0 {
            if let c = visit(t.id) { return c }
        }
        return nil
    }
}

/// The candidate closest to `word` by edit distance, if it is close enough to be a likely typo.
public func nearest(_ word: String, among candidates: [String]) -> String? {
    var best: (String, Int)?
    for c in candidates {
        let d = editDistance(word, c)
        if d <= max(2, word.count / 3), best == nil || d < best!.1 { best = (c, d) }
    }
    return best?.0
}

func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var prev = Array(0...b.count)
    for i in 1...a.count {
        var cur = [i] + Array(repeating: 0, count: b.count)
        for j in 1...b.count {
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        prev = cur
    }
    return prev[b.count]
}
