/// Why a flow was refused at registration, naming the flow and the culprit.
public enum FlowValidationError: Error, Equatable, CustomStringConvertible, Sendable {
    case invalidFlowId(String)
    case invalidTaskId(flow: String, task: String)
    case duplicateFlow(String)
    case duplicateTask(flow: String, task: String)
    case unknownUpstream(flow: String, task: String, upstream: String, suggestion: String?)
    case cycle(flow: String, path: [String])
    case emptyFlow(String)
    case invalidSchedule(flow: String, error: CronError)
    case invalidOption(flow: String, detail: String)

    public var description: String {
        switch self {
        case .invalidFlowId(let id):
            return "flow id `\(id)` is invalid: use lowercase letters, digits and `_`, starting with a letter ([a-z][a-z0-9_]*)"
        case .invalidTaskId(let f, let t):
            return "flow `\(f)`: task id `\(t)` is invalid: use letters, digits, `_`, `-` and `.` (a group: `marts.orders`), starting with a letter"
        case .duplicateFlow(let id):
            return "flow `\(id)` is registered twice"
        case .duplicateTask(let f, let t):
            return "flow `\(f)`: task `\(t)` is declared twice"
        case .unknownUpstream(let f, let t, let u, let s):
            let hint = s.map { "; did you mean `\($0)`?" } ?? ""
            return "flow `\(f)`: task `\(t)` depends on unknown task `\(u)`\(hint)"
        case .cycle(let f, let path):
            return "flow `\(f)` has a cycle: \(path.joined(separator: " → "))"
        case .emptyFlow(let f):
            return "flow `\(f)` has no tasks"
        case .invalidSchedule(let f, let e):
            return "flow `\(f)`: \(e)"
        case .invalidOption(let f, let d):
            return "flow `\(f)`: \(d)"
        }
    }
}
