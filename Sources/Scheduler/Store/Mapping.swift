import CeleryProtocol
import FlowKit
import Foundation
import PostgresClient

/// Dynamic task mapping: a mapped task that becomes ready expands into one task instance per
/// element of its list (`task[index]`), queued in one set-based batch; when the last instance
/// ends, the mapped task ends too, with its instances' results as one list in index order.
extension SchedulerStore {
    /// Queues tasks that became ready. A mapped task among them expands into its instances,
    /// which are queued with the rest; one that cannot (an empty list: skipped; not a list or
    /// over its cap: failed) ends at once and its downstream tasks are evaluated.
    func dispatchReady(_ s: PGSession, runPk: Int, graph: FlowGraph, ready: [String], now: Date, sink: MessageSink? = nil) throws -> [CeleryMessage] {
        let mapped = ready.filter { graph.tasks.isMapped($0) }
        guard !mapped.isEmpty else { return try queueTasks(s, runPk: runPk, graph: graph, taskIds: ready, now: now, sink: sink) }
        let expansion = try expand(s, runPk: runPk, graph: graph, tasks: mapped, now: now)
        var out = try queueTasks(s, runPk: runPk, graph: graph, taskIds: ready.filter { !graph.tasks.isMapped($0) } + expansion.instances, now: now,
                                 sink: sink)
        if !expansion.ended.isEmpty {
            out += try evaluateDownstream(s, runPk: runPk, graph: graph, finished: expansion.ended, now: now, sink: sink)
        }
        return out
    }

    /// What expanding some mapped tasks did: the instances to queue, and the mapped tasks that
    /// ended without any.
    struct Expansion {
        var instances: [String] = []
        var ended: [String] = []
    }

    /// Expands pending mapped tasks: reads each one's list (its source task's result or a
    /// param), inserts or resets its instances, and moves it to `running`. Instances left over
    /// from an earlier, longer expansion (before a clear) are deleted with their tries.
    func expand(_ s: PGSession, runPk: Int, graph: FlowGraph, tasks: [String], now: Date) throws -> Expansion {
        let sourceTasks = tasks.compactMap { t -> String? in if case .result(let u)? = graph.tasks[t]?.mapOver { return u }; return nil }
        let found = try s.queries([
            ("SELECT params::text AS params FROM runs WHERE id = $1", [runPk]),
            ("SELECT task_id, result::text AS result FROM task_instances WHERE run_pk = $1 AND task_id = ANY($2::text[])", [runPk, sourceTasks]),
            ("SELECT task_id FROM task_instances WHERE run_pk = $1 AND task_id = ANY($2::text[]) AND state = 'pending' FOR NO KEY UPDATE", [runPk, tasks]),
        ])
        let params = try found[0].single().json("params").objectValue ?? [:]
        var results: [String: JSONValue] = [:]
        for r in found[1].all { results[try r.string("task_id")] = try r.jsonOrNull("result") }
        let pending = Set(try found[2].all.map { try $0.string("task_id") })

        var out = Expansion()
        var h = HistoryBatch()
        var ends: [(task: String, state: TaskState, error: String?)] = []
        for task in tasks where pending.contains(task) {
            let def = graph.tasks[task]!
            let source = def.mapOver!
            let value: JSONValue?
            switch source {
            case .result(let u): value = results[u]
            case .param(let p): value = params[p]
            }
            let cap = def.maxMapLength ?? defaultMaxMapLength
            guard case .array(let items)? = value else {
                let got = value.map { "a JSON \($0.typeName)" } ?? "nothing"
                ends.append((task, .failed, "mapped task `\(task)` maps over \(source.phrase), which is \(got), not a list"))
                continue
            }
            if items.isEmpty {
                ends.append((task, .skipped, "mapped over an empty list (\(source.phrase)): no instances"))
                continue
            }
            guard items.count <= cap else {
                ends.append((task, .failed, "mapped task `\(task)` would expand to \(items.count) instances (\(source.phrase)), over its cap of \(cap): raise maxItems or split the list"))
                continue
            }
            try s.query("""
                INSERT INTO task_instances (run_pk, task_id, state, max_tries, queue, priority, timeout_seconds, executor, map_parent, map_index, map_item,
                                            pool, pool_slots)
                SELECT $1, $2 || '[' || (e.n - 1) || ']', 'pending', $3, $4, $5, $6, 'flowkit', $2, e.n - 1, e.item, $8, $9
                FROM jsonb_array_elements($7::jsonb) WITH ORDINALITY AS e(item, n)
                ON CONFLICT (run_pk, task_id) DO UPDATE SET state = 'pending', map_item = EXCLUDED.map_item,
                    max_tries = task_instances.try_number + EXCLUDED.max_tries, ended_at = NULL, error = NULL, result = NULL,
                    next_attempt_at = NULL, message_id = NULL
                """, [runPk, task, def.retry.maxTries, def.queue, def.priority, def.timeoutSeconds, JSONValue.array(items).compactJSON,
                      def.pool, def.poolSlots ?? 1])
            s.enqueue("""
                WITH gone AS (SELECT task_id FROM task_instances WHERE run_pk = $1 AND map_parent = $2 AND map_index >= $3),
                     tries AS (DELETE FROM task_tries WHERE run_pk = $1 AND task_id IN (SELECT task_id FROM gone))
                DELETE FROM task_instances WHERE run_pk = $1 AND task_id IN (SELECT task_id FROM gone)
                """, [runPk, task, items.count])
            s.enqueue("""
                UPDATE task_instances SET state = 'running', started_at = $3, ended_at = NULL, map_left = $4, result = NULL, error = NULL
                WHERE run_pk = $1 AND task_id = $2
                """, [runPk, task, now, items.count])
            s.enqueue("UPDATE runs SET unfinished_tasks = unfinished_tasks + $2 WHERE id = $1", [runPk, items.count])
            h.add(runPk, task, 0, "pending", "running", now, "scheduler", "expanded into \(items.count) mapped instances over \(source.phrase)", true)
            out.instances += (0..<items.count).map { MappedInstance.id(task, index: $0) }
        }
        for e in ends {
            s.enqueue("""
                WITH u AS (UPDATE task_instances SET state = $3, ended_at = $4, error = $5 WHERE run_pk = $1 AND task_id = $2 AND state = 'pending'
                           RETURNING task_id)
                UPDATE runs SET unfinished_tasks = unfinished_tasks - (SELECT count(*) FROM u) WHERE id = $1
                """, [runPk, e.task, e.state.rawValue, now, e.error])
            h.add(runPk, e.task, 0, "pending", e.state.rawValue, now, "scheduler", e.error, true)
            out.ended.append(e.task)
        }
        h.insert(s)
        return out
    }

    /// Counts ended instances against their mapped tasks; a mapped task whose last instance
    /// ended ends too: `failed` if any instance failed (naming how many and the first),
    /// otherwise `success` with the instances' results as a list in index order (null for a
    /// skipped one), or `skipped` if every instance was. Returns the mapped tasks that ended.
    func settleMapped(_ s: PGSession, runPk: Int, instances: [String], now: Date) throws -> [String] {
        var count: [String: Int] = [:]
        for i in instances { if let m = MappedInstance.parse(i) { count[m.task, default: 0] += 1 } }
        guard !count.isEmpty else { return [] }
        let parents = count.keys.sorted()
        let done = try s.query("""
            UPDATE task_instances t SET map_left = t.map_left - u.n
            FROM unnest($2::text[], $3::int[]) AS u(task_id, n)
            WHERE t.run_pk = $1 AND t.task_id = u.task_id AND t.state = 'running' AND t.map_left IS NOT NULL
            RETURNING t.task_id, t.map_left
            """, [runPk, parents, parents.map { count[$0]! }]).all.filter { try $0.int("map_left") <= 0 }.map { try $0.string("task_id") }
        guard !done.isEmpty else { return [] }
        // `agg` is MATERIALIZED and the update names its rows by primary key: with statistics
        // taken before a run's 10,000 instances existed, the planner chose a nested loop that
        // aggregated the instances once per task instance of the run (100 million rows, ~90 s
        // in W8 after W1).
        try s.query("""
            WITH agg AS MATERIALIZED (
                SELECT map_parent, count(*) AS n,
                       count(*) FILTER (WHERE state IN ('failed', 'upstream_failed', 'cancelled')) AS bad,
                       min(map_index) FILTER (WHERE state IN ('failed', 'upstream_failed', 'cancelled')) AS first_bad,
                       bool_or(state = 'success') AS any_ok,
                       jsonb_agg(result ORDER BY map_index) AS results
                FROM task_instances WHERE run_pk = $1 AND map_parent = ANY($2::text[]) GROUP BY map_parent),
            u AS (
                UPDATE task_instances t SET
                    state = CASE WHEN agg.bad > 0 THEN 'failed' WHEN agg.any_ok THEN 'success' ELSE 'skipped' END,
                    ended_at = $3, map_left = 0,
                    result = CASE WHEN agg.bad > 0 THEN NULL ELSE agg.results END,
                    error = CASE WHEN agg.bad > 0 THEN agg.bad || ' of ' || agg.n || ' mapped instances did not succeed; the first is `'
                                                     || agg.map_parent || '[' || agg.first_bad || ']`' END
                FROM agg WHERE t.run_pk = $1 AND t.task_id = ANY($2::text[]) AND t.task_id = agg.map_parent
                RETURNING t.task_id, t.state, t.error, agg.n),
            h AS (
                INSERT INTO task_history (run_pk, task_id, try_number, from_state, to_state, at, source, detail)
                SELECT $1, task_id, 0, 'running', state, $3, 'scheduler', COALESCE(error, 'all ' || n || ' mapped instances ended') FROM u)
            UPDATE runs SET unfinished_tasks = unfinished_tasks - (SELECT count(*) FROM u) WHERE id = $1
            """, [runPk, done, now])
        return done
    }
}
