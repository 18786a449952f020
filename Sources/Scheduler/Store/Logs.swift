import CeleryProtocol
import FlowKit
import Foundation
import PostgresClient

/// Task logs.
extension SchedulerStore {
    /// Longest log line kept whole; longer ones are cut, saying how much was dropped.
    static let maxLogLine = 16 * 1024

    static func storableLogLine(_ line: String) -> String {
        guard line.utf8.count > maxLogLine else { return line }
        let kept = String(decoding: line.utf8.prefix(maxLogLine), as: UTF8.self)
        return kept + " …[line cut: \(line.utf8.count - kept.utf8.count) more bytes]"
    }

    /// Log lines of one try after `offset` (the `offset` of the last line already read).
    /// A task id the run does not have, with the nearest one it does (a typo's likely fix).
    static func noSuchTask(_ runId: String, _ taskId: String, among tasks: [String]) -> NotFound {
        let hint = nearest(taskId, among: tasks).map { "; did you mean `\($0)`?" } ?? ""
        return NotFound("run `\(runId)` has no task `\(taskId)`\(hint)")
    }

    public func logs(runId: String, taskId: String, tryNumber: Int?, after offset: Int, limit: Int = 1000) async throws -> (tryNumber: Int, lines: [LogLine]) {
        try await db.run { s in
            guard let row = try s.query("""
                SELECT r.id, t.try_number FROM runs r JOIN task_instances t ON t.run_pk = r.id AND t.task_id = $2 WHERE r.run_id = $1
                """, [runId, taskId]).first else {
                guard let run = try s.query("SELECT id FROM runs WHERE run_id = $1", [runId]).first else { throw NotFound("unknown run `\(runId)`") }
                let tasks = try s.query("SELECT task_id FROM task_instances WHERE run_pk = $1", [run.int("id")]).all.compactMap { try $0.stringOrNull("task_id") }
                throw Self.noSuchTask(runId, taskId, among: tasks)
            }
            let latest = try row.int("try_number")
            if let tryNumber, tryNumber > max(latest, 1) {
                throw NotFound(latest == 0 ? "task `\(taskId)` of run `\(runId)` has not run yet: it has no try \(tryNumber)"
                                           : "task `\(taskId)` of run `\(runId)` has no try \(tryNumber): its tries are 1–\(latest)")
            }
            let t = tryNumber ?? max(1, latest)
            let lines = try s.query("""
                SELECT id, at, line FROM task_logs WHERE run_pk = $1 AND task_id = $2 AND try_number = $3 AND id > $4 ORDER BY id LIMIT $5
                """, [row.int("id"), taskId, t, offset, limit]).all.map {
                LogLine(offset: try $0.int("id"), at: try $0.date("at"), line: try $0.string("line"))
            }
            return (t, lines)
        }
    }
}
