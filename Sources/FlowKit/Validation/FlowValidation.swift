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
        }
        var params = Set<String>()
        for p in self.params where !params.insert(p.name).inserted {
            throw FlowValidationError.invalidOption(flow: id, detail: "param `\(p.name)` is declared twice")
        }
        for p in self.params { if let d = p.defaultValue, !p.accepts(d) {
            throw FlowValidationError.invalidOption(flow: id, detail: "param `\(p.name)`: default \(d.compactJSON) is not of type \(p.kind.rawValue)")
        } }
    }

    static func isValidFlowId(_ s: String) -> Bool {
        guard let first = s.unicodeScalars.first, ("a"..."z").contains(first), s.count <= 200 else { return false }
        return s.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "_" }
    }

    static func isValidTaskId(_ s: String) -> Bool {
        guard let first = s.unicodeScalars.first, first.properties.isASCIIHexDigit || ("a"..."z").contains(first) || ("A"..."Z").contains(first),
              !("0"..."9").contains(first), s.count <= 200 else { return false }
        return s.unicodeScalars.allSatisfy {
            ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "_" || $0 == "-"
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
