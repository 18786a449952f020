public import FlowKit
public import Foundation
import PostgresClient

/// Assets and data-aware scheduling: asset events (from tasks' outlets and the API), the flows
/// scheduled on them, and the runs those events start.
extension SchedulerStore {
    /// Records asset events and starts the runs they complete, in the caller's transaction.
    /// For each flow scheduled on one of these assets, its watermark rows are locked (in flow
    /// and URI order); when every one of its assets has an event past its watermark, a queued
    /// `asset` run is created with those events, and the watermarks move to them. A concurrent
    /// recorder waits for the locks and then sees the moved watermarks: an event starts each
    /// consumer at most once, and an event committed meanwhile is seen by one of them.
    @discardableResult
    func recordAssetEvents(_ s: PGSession, _ events: [(uri: String, source: String, runId: String?, taskId: String?, extra: JSONValue)],
                           now: Date) throws -> (eventIds: [Int], runs: [RunRecord]) {
        guard !events.isEmpty else { return ([], []) }
        let uris = Array(Set(events.map(\.uri))).sorted()
        try s.query("INSERT INTO assets (uri) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING", [uris])
        // The assets' rows serialise their events: an event's id is drawn only after the previous
        // recorder of that asset committed, so a watermark never passes an event still to commit.
        try s.query("SELECT uri FROM assets WHERE uri = ANY($1::text[]) ORDER BY uri FOR UPDATE", [uris])
        let eventIds = try s.query("""
            INSERT INTO asset_events (uri, source, run_id, task_id, extra, at)
            SELECT u, src, r, t, x::jsonb, $6 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) AS e(u, src, r, t, x)
            RETURNING id
            """, [events.map(\.uri), events.map(\.source), events.map(\.runId), events.map(\.taskId), events.map { $0.extra.jsonbText }, now]).all.map { try $0.int("id") }
        let consumers = try s.query("SELECT DISTINCT flow_id FROM asset_watermarks WHERE uri = ANY($1::text[]) ORDER BY flow_id", [uris]).all
            .map { try $0.string("flow_id") }
        var created: [RunRecord] = []
        for flow in consumers {
            let marks = try s.query("""
                SELECT w.uri, w.consumed_id, (SELECT max(id) FROM asset_events e WHERE e.uri = w.uri) AS latest
                FROM asset_watermarks w WHERE w.flow_id = $1 ORDER BY w.uri FOR UPDATE
                """, [flow]).all
            guard !marks.isEmpty, try marks.allSatisfy({ try ($0.intOrNull("latest") ?? 0) > $0.int("consumed_id") }) else { continue }
            guard let f = try s.query("SELECT current_version, is_active, is_paused FROM flows WHERE flow_id = $1", [flow]).first,
                  try f.boolOrNull("is_active") == true else { continue }
            let triggering = try s.query("""
                SELECT COALESCE(jsonb_agg(jsonb_build_object('id', e.id, 'uri', e.uri, 'extra', e.extra, 'at', e.at, 'runId', e.run_id,
                                                             'taskId', e.task_id, 'source', e.source) ORDER BY e.id), '[]')::text AS events
                FROM asset_watermarks w JOIN asset_events e ON e.uri = w.uri AND e.id > w.consumed_id AND e.id <= $2
                WHERE w.flow_id = $1
                """, [flow, marks.compactMap { try $0.intOrNull("latest") }.max() ?? 0]).single().string("events")
            let version = try f.int("current_version")
            let graph = try graphs.graph(s, flow: flow, version: version)
            let params = try graph.definition.resolveParams(conf: [:])
            guard let run = try insertRun(s, flowId: flow, version: version, kind: "asset", conf: [:], params: params,
                                          logicalDate: now, intervalStart: now, intervalEnd: now, deadline: graph.definition.deadline) else { continue }
            try s.query("UPDATE runs SET triggering_events = $2::jsonb WHERE id = $1", [run.id, triggering])
            try s.query("""
                UPDATE asset_watermarks w SET consumed_id = m.latest
                FROM unnest($2::text[], $3::bigint[]) AS m(uri, latest) WHERE w.flow_id = $1 AND w.uri = m.uri
                """, [flow, marks.map { try $0.string("uri") }, marks.map { try $0.intOrNull("latest") ?? 0 }])
            created.append(run)
        }
        return (eventIds, created)
    }

    /// An event posted from outside (`POST /api/v1/assets/events`): recorded, and the runs it
    /// completes created, in one transaction.
    public func postAssetEvent(uri: String, extra: JSONValue, now: Date) async throws -> (eventId: Int, runs: [RunRecord]) {
        guard Flow.isValidAssetURI(uri) else { throw BadRequest("`\(uri)` is not an asset URI: use scheme://name, e.g. s3://bucket/key") }
        return try await audited { [self] s, actor in
            let recorded = try recordAssetEvents(s, [(uri, "api", nil, nil, extra)], now: now)
            try audit(s, actor, "asset_event", uri, ["eventId": .int(recorded.eventIds[0]), "runs": .array(recorded.runs.map { .string($0.runId) })], now: now)
            return (recorded.eventIds[0], recorded.runs)
        }
    }

    /// What an S3 event notification recorded: one asset event per object write not seen
    /// before (and one per watched prefix asset holding the object), the deliveries already
    /// seen, and the runs the events started.
    public struct S3EventsRecorded: Sendable {
        public var eventIds: [Int]
        public var duplicates: Int
        public var runs: [RunRecord]
    }

    /// Records the object writes of an S3 event notification, in one transaction: each write
    /// is claimed by its dedupe key (bucket, key, sequencer) first, so a redelivery — even one
    /// arriving at the same moment on another API process — records nothing. An object's event
    /// is `s3://bucket/key`; a flow scheduled on a prefix asset (`s3://bucket/landing/`, ending in
    /// `/`) gets an event of that asset for each object under it, with the object in `extra`.
    public func recordS3Events(_ records: [S3NotificationRecord], now: Date) async throws -> S3EventsRecorded {
        var seen = Set<String>()
        let unique = records.filter { seen.insert($0.dedupeKey).inserted }
        guard !unique.isEmpty else { return S3EventsRecorded(eventIds: [], duplicates: records.count, runs: []) }
        return try await audited { [self] s, actor in
            // Sorted: two deliveries that share writes claim them in the same order, never deadlocking.
            let keys = unique.map(\.dedupeKey).sorted()
            let claimed = Set(try s.query("""
                INSERT INTO s3_event_deliveries (dedupe_key, at) SELECT unnest($1::text[]), $2 ON CONFLICT DO NOTHING RETURNING dedupe_key
                """, [keys, now]).all.map { try $0.string("dedupe_key") })
            let fresh = unique.filter { claimed.contains($0.dedupeKey) }
            guard !fresh.isEmpty else { return S3EventsRecorded(eventIds: [], duplicates: records.count, runs: []) }
            let prefixes = try s.query("""
                SELECT uri FROM assets WHERE uri LIKE 's3://%/%' AND right(uri, 1) = '/' AND split_part(uri, '/', 3) = ANY($1::text[])
                """, [Array(Set(fresh.map(\.bucket)))]).all.map { try $0.string("uri") }
            var events: [(uri: String, source: String, runId: String?, taskId: String?, extra: JSONValue)] = []
            for r in fresh {
                events.append((r.uri, "s3", nil, nil, r.extra))
                for p in prefixes where r.uri.hasPrefix(p) && r.uri != p {
                    var extra = r.extra
                    if case .object(var o) = extra { o["object"] = .string(r.uri); extra = .object(o) }
                    events.append((p, "s3", nil, nil, extra))
                }
            }
            let recorded = try recordAssetEvents(s, events, now: now)
            try audit(s, actor, "s3_event", fresh.count == 1 ? fresh[0].uri : "\(fresh.count) objects",
                      ["eventIds": .array(recorded.eventIds.map { .int($0) }), "runs": .array(recorded.runs.map { .string($0.runId) }),
                       "duplicates": .int(records.count - fresh.count)], now: now)
            return S3EventsRecorded(eventIds: recorded.eventIds, duplicates: records.count - fresh.count, runs: recorded.runs)
        }
    }

    /// Registers the assets flows name (outlets and schedules) and the flows' watermarks: a flow
    /// newly scheduled on an asset starts from the asset's latest event, not from its history.
    func registerAssets(_ s: PGSession, _ defs: [FlowDefinition]) throws {
        let uris = Array(Set(defs.flatMap { ($0.assets ?? []) + $0.tasks.flatMap { $0.outlets ?? [] } })).sorted()
        guard !uris.isEmpty else { return }
        try s.query("INSERT INTO assets (uri) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING", [uris])
        for d in defs {
            let watched = d.assets ?? []
            try s.query("DELETE FROM asset_watermarks WHERE flow_id = $1 AND NOT (uri = ANY($2::text[]))", [d.id, watched])
            try s.query("""
                INSERT INTO asset_watermarks (flow_id, uri, consumed_id)
                SELECT $1, u, COALESCE((SELECT max(id) FROM asset_events e WHERE e.uri = u), 0) FROM unnest($2::text[]) AS u
                ON CONFLICT DO NOTHING
                """, [d.id, watched])
        }
    }

    /// Every asset with its latest event, what updates it (active flows whose tasks name it as an
    /// outlet, and the outside sources its events came from) and the flows scheduled on it.
    public func assets() async throws -> [AssetRecord] {
        try await db.run { s in
            try s.query("""
                WITH produced AS (
                    SELECT o.uri, array_agg(DISTINCT f.flow_id ORDER BY f.flow_id) AS flows,
                           array_agg(DISTINCT f.flow_id || '.' || (t->>'id') ORDER BY f.flow_id || '.' || (t->>'id')) AS tasks
                    FROM flows f JOIN flow_versions v ON v.flow_id = f.flow_id AND v.version = f.current_version
                    CROSS JOIN LATERAL jsonb_array_elements(v.definition->'tasks') t
                    CROSS JOIN LATERAL jsonb_array_elements_text(CASE WHEN jsonb_typeof(t->'outlets') = 'array' THEN t->'outlets' ELSE '[]' END) o(uri)
                    WHERE f.is_active GROUP BY o.uri)
                SELECT a.uri, a.created_at, le.id AS last_id, le.at AS last_at, (SELECT count(*) FROM asset_events e WHERE e.uri = a.uri) AS events,
                       COALESCE((SELECT array_agg(flow_id ORDER BY flow_id) FROM asset_watermarks w WHERE w.uri = a.uri), '{}') AS consumers,
                       COALESCE(p.flows, '{}') AS producers, COALESCE(p.tasks, '{}') AS producer_tasks,
                       COALESCE((SELECT array_agg(DISTINCT e.source ORDER BY e.source) FROM asset_events e WHERE e.uri = a.uri AND e.source <> 'task'), '{}') AS sources
                FROM assets a LEFT JOIN LATERAL (SELECT id, at FROM asset_events e WHERE e.uri = a.uri ORDER BY id DESC LIMIT 1) le ON true
                LEFT JOIN produced p ON p.uri = a.uri
                ORDER BY a.uri
                """).decode(AssetRecord.self)
        }
    }

    /// An asset's events, newest first.
    public func assetEvents(uri: String, limit: Int = 100) async throws -> [AssetEventRecord] {
        try await db.run { s in
            guard try s.query("SELECT 1 FROM assets WHERE uri = $1", [uri]).first != nil else { throw NotFound("unknown asset `\(uri)`") }
            return try s.query("""
                SELECT id, uri, source, run_id, task_id, extra::text AS extra, at FROM asset_events WHERE uri = $1 ORDER BY id DESC LIMIT $2
                """, [uri, limit]).all.map { r in
                AssetEventRecord(id: try r.int("id"), uri: try r.string("uri"), source: try r.string("source"), runId: try r.stringOrNull("run_id"),
                                 taskId: try r.stringOrNull("task_id"), extra: try r.json("extra"), at: try r.date("at"))
            }
        }
    }
}

public struct AssetRecord: Codable, Sendable {
    public var uri: String
    public var createdAt: Date
    public var events: Int
    public var lastEventId: Int?
    public var lastEventAt: Date?
    /// Flows scheduled on it.
    public var consumers: [String]
    /// Active flows with a task that names it as an outlet, and those tasks (`flow.task`).
    public var producers: [String]
    public var producerTasks: [String]
    /// Where its events came from besides tasks: `api` (`POST /api/v1/assets/events`), `s3`.
    public var sources: [String]

    init(row r: PGRow) throws(PGDecodingError) {
        uri = try r.string("uri")
        createdAt = try r.date("created_at")
        events = try r.int("events")
        lastEventId = try r.intOrNull("last_id")
        lastEventAt = try r.dateOrNull("last_at")
        consumers = try r.strings("consumers")
        producers = try r.strings("producers")
        producerTasks = try r.strings("producer_tasks")
        sources = try r.strings("sources")
    }
}

public struct AssetEventRecord: Codable, Sendable {
    public var id: Int
    public var uri: String
    public var source: String
    public var runId: String?
    public var taskId: String?
    public var extra: JSONValue
    public var at: Date
}
