import FlowKit
import Foundation
import Scheduler

/// FlowKit's records in the shapes of Airflow 3's REST API (`/api/v2`, the `apache-airflow-client`
/// models): field names, states and run types as Airflow spells them, times in ISO-8601 UTC, and
/// null where FlowKit has nothing to say (never an invented value). docs/airflow-api.md lists
/// each field and what it comes from.
enum AirflowShapes {
    static func time(_ d: Date?) -> JSONValue { d.map { .string(Instant.format($0, fractionDigits: 6)) } ?? .null }

    /// Airflow has no `cancelled` run: a run stopped by hand is `failed` there.
    static func runState(_ s: String) -> String { s == "cancelled" ? "failed" : s }

    /// FlowKit's run states for an Airflow `state` filter (`failed` includes cancelled runs).
    static func runStates(fromAirflow s: String) throws -> [String] {
        switch s {
        case "queued", "running", "success": return [s]
        case "failed": return ["failed", "cancelled"]
        default: throw APIError.badRequest("`state` must be one of queued, running, success, failed, not `\(s)`")
        }
    }

    /// A run's kind as Airflow's `run_type`.
    static func runType(_ kind: String) -> String {
        switch kind {
        case "scheduled", "manual", "backfill": return kind
        case "asset": return "asset_triggered"
        case "flow": return "operator_triggered"
        default: return "manual"  // webhook: started from outside, by a request
        }
    }

    static func kinds(fromAirflow t: String) throws -> [String] {
        switch t {
        case "scheduled", "backfill": return [t]
        case "manual": return ["manual", "webhook"]
        case "asset_triggered": return ["asset"]
        case "operator_triggered": return ["flow"]
        case "asset_materialization": return []
        default: throw APIError.badRequest("`run_type` must be one of backfill, scheduled, manual, operator_triggered, asset_triggered, asset_materialization, not `\(t)`")
        }
    }

    static func triggeredBy(_ kind: String) -> JSONValue {
        switch kind {
        case "scheduled": return "timetable"
        case "backfill": return "backfill"
        case "asset": return "asset"
        case "flow": return "operator"
        default: return "rest_api"
        }
    }

    /// A task instance's state: `pending` is Airflow's no state (null); a task of a cancelled
    /// run that never finished is `skipped`, as Airflow leaves such tasks; an approval waiting
    /// for its decision is `awaiting_input` (Airflow 3.1's human-in-the-loop state).
    static func taskState(_ s: String, awaitingInput: Bool = false) -> JSONValue {
        switch s {
        case "pending": return .null
        case "cancelled": return "skipped"
        case "running" where awaitingInput: return "awaiting_input"
        default: return .string(s)
        }
    }

    static func taskStates(fromAirflow s: String) throws -> [String] {
        switch s {
        case "none", "no_status": return ["pending"]
        case "queued", "running", "success", "failed", "up_for_retry", "up_for_reschedule", "upstream_failed": return [s]
        case "skipped": return ["skipped", "cancelled"]
        case "awaiting_input": return ["running"]
        case "removed", "scheduled", "restarting", "deferred": return []
        default: throw APIError.badRequest("`state` `\(s)` is not one of Airflow's task instance states")
        }
    }

    /// A UUID derived from `text` (the first 128 bits of its SHA-256): Airflow names versions and
    /// task instances by UUID, FlowKit by a content hash and by (run, task); the same record
    /// always gets the same UUID.
    static func uuid(_ text: String) -> String {
        let h = SHA256.hexString(SHA256.hash(Data(text.utf8)))
        let c = Array(h.prefix(32))
        return [c[0..<8], c[8..<12], c[12..<16], c[16..<20], c[20..<32]].map { String($0) }.joined(separator: "-")
    }

    static func seconds(_ from: Date?, _ to: Date?) -> JSONValue {
        guard let from, let to else { return .null }
        return .double((to.timeIntervalSince(from) * 1000).rounded() / 1000)
    }

    static func dagVersion(_ v: FlowVersionInfo) -> JSONValue {
        ["id": .string(uuid("\(v.flowId)/\(v.hash)")), "version_number": .int(v.version), "dag_id": .string(v.flowId),
         "dag_display_name": .string(v.flowId), "bundle_name": nil, "bundle_version": nil, "bundle_url": nil, "created_at": time(v.createdAt)]
    }

    static func dag(_ d: DagRow) -> JSONValue {
        let f = d.flow
        return [
            "dag_id": .string(f.flowId), "dag_display_name": .string(f.flowId),
            "is_paused": .bool(f.isPaused), "is_stale": .bool(!f.isActive),
            "last_parsed_time": time(d.versionCreatedAt), "last_parse_duration": nil, "last_expired": nil,
            "bundle_name": nil, "bundle_version": nil, "relative_fileloc": d.fileloc.map { .string(fileOnly($0)) } ?? nil,
            "fileloc": .string(d.fileloc.map(fileOnly) ?? ""), "file_token": "",
            "description": f.description.isEmpty ? nil : .string(f.description),
            "timetable_summary": f.schedule.map { .string($0) } ?? nil,
            "timetable_description": f.schedule.map { .string("cron \($0) (\(f.timezone))") } ?? (d.hasAssetSchedule ? "Triggered by assets" : nil),
            "timetable_partitioned": false, "timetable_periodic": .bool(f.schedule != nil),
            "tags": .array(f.tags.map { ["name": .string($0), "dag_id": .string(f.flowId), "dag_display_name": .string(f.flowId)] }),
            "max_active_tasks": .int(d.maxActiveTasks ?? 0), "max_active_runs": .int(d.maxActiveRuns),
            "max_consecutive_failed_dag_runs": 0,
            "has_task_concurrency_limits": .bool(d.hasTaskLimits || d.maxActiveTasks != nil), "has_import_errors": .bool(d.hasImportErrors),
            "is_backfillable": .bool(f.schedule != nil),
            "next_dagrun_logical_date": time(f.nextRunAt), "next_dagrun_data_interval_start": nil, "next_dagrun_data_interval_end": nil,
            "next_dagrun_run_after": time(f.nextRunAt),
            "allowed_run_types": nil,
            "owners": .array(f.owner.isEmpty ? [] : [.string(f.owner)]),
        ]
    }

    static func dagDetails(_ d: DagRow, activeRuns: Int, latest: FlowVersionInfo?) -> JSONValue {
        guard case .object(var o) = dag(d) else { return dag(d) }
        o["catchup"] = .bool(d.catchup)
        o["concurrency"] = .int(d.maxActiveTasks ?? 0)
        o["render_template_as_native_obj"] = false
        o["timezone"] = .string(d.flow.timezone)
        o["dag_run_timeout"] = d.runTimeoutSeconds.map { .string(isoDuration($0)) } ?? nil
        o["params"] = .object(Dictionary(uniqueKeysWithValues: d.params.map { p in
            (p.name, ["value": p.defaultValue ?? .null, "description": p.description.isEmpty ? nil : .string(p.description),
                      "schema": ["type": .string(jsonSchemaType(p.kind))]] as JSONValue)
        }))
        o["start_date"] = nil; o["end_date"] = nil; o["doc_md"] = nil; o["default_args"] = nil; o["owner_links"] = nil
        o["template_search_path"] = nil; o["is_paused_upon_creation"] = nil; o["last_parsed"] = time(d.versionCreatedAt)
        o["asset_expression"] = nil; o["is_favorite"] = false; o["active_runs_count"] = .int(activeRuns)
        o["latest_dag_version"] = latest.map(dagVersion) ?? nil
        return .object(o)
    }

    static func dagRun(_ r: RunRecord, version: FlowVersionInfo?) -> JSONValue {
        [
            "dag_run_id": .string(r.runId), "dag_id": .string(r.flowId), "dag_display_name": .string(r.flowId),
            "logical_date": time(r.logicalDate), "queued_at": time(r.createdAt), "start_date": time(r.startedAt), "end_date": time(r.endedAt),
            "duration": seconds(r.startedAt, r.endedAt),
            "data_interval_start": time(r.dataIntervalStart), "data_interval_end": time(r.dataIntervalEnd),
            "run_after": time(r.logicalDate), "last_scheduling_decision": nil,
            "run_type": .string(runType(r.triggerKind)), "state": .string(runState(r.state)), "triggered_by": triggeredBy(r.triggerKind),
            "triggering_user_name": nil, "conf": r.conf.objectValue.map { .object($0) } ?? [:], "note": nil,
            "dag_versions": .array(version.map { [dagVersion($0)] } ?? []), "bundle_version": nil,
            "partition_key": nil, "partition_date": nil,
        ]
    }

    /// A task instance of a run (`task` its definition, when the run's version still has it).
    static func taskInstance(_ t: TaskInstanceRecord, run: RunRecord, task: FlowDefinition.TaskDefinition?, version: FlowVersionInfo?,
                             awaitingInput: Bool) -> JSONValue {
        [
            "id": .string(uuid("\(run.id)/\(t.taskId)")), "task_id": .string(baseTaskId(t)), "dag_id": .string(run.flowId),
            "dag_run_id": .string(run.runId), "map_index": .int(t.mapIndex ?? -1), "rendered_map_index": t.mapIndex.map { .string(String($0)) } ?? nil,
            "logical_date": time(run.logicalDate), "run_after": time(run.logicalDate),
            "start_date": time(t.startedAt), "end_date": time(t.endedAt), "duration": seconds(t.startedAt, t.endedAt),
            "state": taskState(t.state, awaitingInput: awaitingInput), "try_number": .int(t.tryNumber), "max_tries": .int(max(0, t.maxTries - 1)),
            "task_display_name": .string(baseTaskId(t)), "dag_display_name": .string(run.flowId),
            "hostname": t.worker.map { .string($0) } ?? nil, "unixname": nil, "pool": .string(t.pool ?? ""), "pool_slots": .int(task?.poolSlots ?? 1),
            "queue": .string(t.queue), "priority_weight": .int(t.priority), "operator": task.map { .string(operatorName($0.kind)) } ?? nil,
            "operator_name": task.map { .string(operatorName($0.kind)) } ?? nil,
            "queued_when": time(t.queuedAt), "scheduled_when": nil, "pid": nil, "executor": nil, "executor_config": "{}",
            "note": nil, "rendered_fields": [:], "trigger": nil, "triggerer_job": nil,
            "dag_version": version.map(dagVersion) ?? nil,
        ]
    }

    /// One try of a task instance (Airflow's task instance history).
    static func taskTry(_ x: TaskTryRecord, of t: TaskInstanceRecord, run: RunRecord, task: FlowDefinition.TaskDefinition?,
                        version: FlowVersionInfo?) -> JSONValue {
        [
            "task_id": .string(baseTaskId(t)), "dag_id": .string(run.flowId), "dag_run_id": .string(run.runId), "map_index": .int(t.mapIndex ?? -1),
            "start_date": time(x.startedAt), "end_date": time(x.endedAt), "duration": seconds(x.startedAt, x.endedAt),
            "state": taskState(x.state), "try_number": .int(x.tryNumber), "max_tries": .int(max(0, t.maxTries - 1)),
            "task_display_name": .string(baseTaskId(t)), "dag_display_name": .string(run.flowId),
            "hostname": x.worker.map { .string($0) } ?? nil, "unixname": nil, "pool": .string(t.pool ?? ""), "pool_slots": .int(task?.poolSlots ?? 1),
            "queue": .string(t.queue), "priority_weight": .int(t.priority),
            "operator": task.map { .string(operatorName($0.kind)) } ?? nil, "operator_name": task.map { .string(operatorName($0.kind)) } ?? nil,
            "queued_when": time(x.queuedAt), "scheduled_when": nil, "pid": nil, "executor": nil, "executor_config": "{}",
            "dag_version": version.map(dagVersion) ?? nil,
        ]
    }

    static func pool(_ p: PoolRecord) -> JSONValue {
        [
            "name": .string(p.name), "slots": .int(p.slots), "description": p.description.isEmpty ? nil : .string(p.description),
            "include_deferred": false, "occupied_slots": .int(p.usedSlots), "running_slots": .int(p.usedSlots),
            "queued_slots": .int(p.waiting), "scheduled_slots": 0, "open_slots": .int(max(0, p.slots - p.usedSlots)), "deferred_slots": 0,
            "team_name": nil,
        ]
    }

    static func asset(_ a: AssetRecord, id: Int) -> JSONValue {
        [
            "id": .int(id), "name": .string(a.uri), "uri": .string(a.uri), "group": "asset", "extra": [:],
            "created_at": time(a.createdAt), "updated_at": time(a.lastEventAt ?? a.createdAt),
            "scheduled_dags": .array(a.consumers.map { ["dag_id": .string($0), "created_at": time(a.createdAt), "updated_at": time(a.createdAt)] }),
            "producing_tasks": .array(a.producerTasks.map { t -> JSONValue in
                let parts = t.split(separator: ".", maxSplits: 1).map(String.init)
                return ["dag_id": .string(parts[0]), "task_id": .string(parts.count > 1 ? parts[1] : ""), "created_at": time(a.createdAt), "updated_at": time(a.createdAt)]
            }),
            "consuming_tasks": [], "aliases": [], "watchers": [],
            "last_asset_event": a.lastEventId.map { ["id": .int($0), "timestamp": time(a.lastEventAt)] } ?? nil,
        ]
    }

    static func assetEvent(_ e: AssetEventRecord, assetId: Int, sourceFlow: String?) -> JSONValue {
        [
            "id": .int(e.id), "asset_id": .int(assetId), "uri": .string(e.uri), "name": .string(e.uri), "group": "asset",
            "extra": e.extra.objectValue.map { .object($0) } ?? [:],
            "source_task_id": e.taskId.map { .string($0) } ?? nil, "source_dag_id": sourceFlow.map { .string($0) } ?? nil,
            "source_run_id": e.runId.map { .string($0) } ?? nil, "source_map_index": -1,
            "created_dagruns": [], "timestamp": time(e.at), "partition_key": nil,
        ]
    }

    /// A mapped instance `double[3]` is task `double`, map index 3, in Airflow.
    static func baseTaskId(_ t: TaskInstanceRecord) -> String { t.mapParent ?? t.taskId }

    /// FlowKit's own kind of task (`swift`, `shell`, `sql`, `python`, `dbt`, `sensor`, …): there is no
    /// Airflow operator class behind it to name.
    static func operatorName(_ kind: String) -> String { kind }

    static func fileOnly(_ location: String) -> String {
        if let colon = location.lastIndex(of: ":"), location[location.index(after: colon)...].allSatisfy(\.isNumber) { return String(location[..<colon]) }
        return location
    }

    static func isoDuration(_ seconds: Double) -> String { "PT\(seconds.rounded() == seconds ? String(Int(seconds)) : String(seconds))S" }

    static func jsonSchemaType(_ k: Param.Kind) -> String {
        switch k {
        case .string: return "string"
        case .int: return "integer"
        case .number: return "number"
        case .bool: return "boolean"
        case .object: return "object"
        case .array: return "array"
        }
    }
}
