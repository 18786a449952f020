import FlowKit
import FlowKitTesting
import FlowServer
import Flows
import Foundation
import Scheduler
import Testing

/// Flows scheduled on S3 assets: one object, and a prefix.
let s3ObjectConsumer = Flow("s3_object_consumer", assets: ["s3://example/landing/numbers.csv"]) { f in
    f.task("seen") { ctx in
        let events = ctx.triggeringEvents?.arrayValue ?? []
        return ["count": .int(events.count), "extra": events.first?["extra"] ?? .null]
    }
}
let s3PrefixConsumer = Flow("s3_prefix_consumer", assets: ["s3://example/landing/"]) { f in
    f.task("seen") { ctx in ["objects": .array((ctx.triggeringEvents?.arrayValue ?? []).map { $0["extra"]?["object"] ?? .null })] }
}

/// Every transfer, on files under `dir` (param), and the sensor with a glob, a minimum size and a quiet period.
let s3Transfers = Flow("s3_transfers", params: [Param("dir", .string, default: "/tmp")]) { f in
    let up = f.s3("upload", connection: "lake", bucket: "example", .upload(from: "{{ params.dir }}/in.csv", to: "staged/{{ ds }}/in.csv"))
    let wait = f.sensor("wait_for_staged", .s3Key(connection: "lake", bucket: "example", key: "staged/{{ ds }}/*.csv", minSize: 10, stableFor: .seconds(1)),
                        pokeInterval: .milliseconds(300), timeout: .seconds(30), after: [up])
    let list = f.s3("list", connection: "lake", bucket: "example", .list(prefix: "staged/**.csv"), after: [wait])
    let down = f.s3("download", connection: "lake", bucket: "example", .download(key: "staged/{{ ds }}/in.csv", to: "{{ params.dir }}/back.csv"),
                    after: [list])
    let copy = f.s3("copy", connection: "lake", bucket: "example", .copy(from: "staged/{{ ds }}/in.csv", to: "s3://other/copied.csv"), after: [down])
    f.s3("clean", connection: "lake", bucket: "example", .delete(prefix: "staged/"), after: [copy])
}

/// The same store with a wrong secret.
let s3WrongSecret = Flow("s3_wrong_secret") { f in
    f.s3("list", connection: "lake_wrong", bucket: "example", .list(prefix: ""))
}

@Suite("Object storage end to end", .serialized)
struct ObjectStorageEndToEndTests {
    /// A moto server with buckets `example` and `other`, connections `lake` (and `lake_wrong`) set for the worker.
    func withStore(_ body: (MotoServer) async throws -> Void) async throws {
        let moto = try await MotoServer.start()
        defer { moto.stop() }
        try moto.boto3("s3.create_bucket(Bucket='example'); s3.create_bucket(Bucket='other')")
        setenv("FLOWKIT_CONN_LAKE", moto.connectionURL(), 1)
        setenv("FLOWKIT_CONN_LAKE_WRONG", moto.connectionURL(secret: "wrong-secret-value"), 1)
        setenv("FLOWKIT_CONN_S3_EVENTS", "s3-notify-secret", 1)
        defer { for n in ["LAKE", "LAKE_WRONG", "S3_EVENTS"] { unsetenv("FLOWKIT_CONN_" + n) } }
        try await body(moto)
    }

    @Test("example_s3: the sensor pokes without holding a slot until boto3 puts the key, load counts its lines, archive moves it; the outlet records s3://example/archive/")
    func exampleS3() async throws {
        try await withStore { moto in
            try await withAPI { api in
                let trigger = try await api.request("POST", "/api/v1/flows/example_s3/runs", token: LiveAPI.admin, body: "{}")
                #expect(trigger.status == 201)
                let run = try #require(trigger.json["runId"]?.stringValue)
                try await eventually("the sensor to poke and find nothing") {
                    (try await api.store.taskInstances(runId: run).first { $0.taskId == "wait_for_file" }?.state) == "up_for_reschedule"
                }
                let log = try await api.store.logs(runId: run, taskId: "wait_for_file", tryNumber: 1, after: 0).lines.map(\.line)
                #expect(log.contains { $0.contains("no object matches s3://example/landing/numbers.csv yet") })
                try moto.boto3("s3.put_object(Bucket='example', Key='landing/numbers.csv', Body=b'n\\n1\\n2\\n3\\n42')")
                try await eventually("example_s3 to finish", timeout: 40) { ["success", "failed"].contains(try await api.store.run(run).state) }
                let tis = Dictionary(uniqueKeysWithValues: try await api.store.taskInstances(runId: run).map { ($0.taskId, $0) })
                #expect(try await api.store.run(run).state == "success", "\(tis.mapValues { $0.error ?? "" })")
                #expect(tis["load"]?.result == ["lines": 5])
                let sensed = try #require(tis["wait_for_file"]?.result)
                #expect(sensed["count"] == 1 && sensed["keys"]?.arrayValue?.first?["key"] == "landing/numbers.csv" && sensed["keys"]?.arrayValue?.first?["size"] == 10)
                #expect(sensed["keys"]?.arrayValue?.first?["etag"]?.stringValue?.count == 32)
                #expect(tis["archive"]?.result?["to"] == "s3://example/archive/landing/numbers.csv")
                #expect(try moto.boto3("print(s3.get_object(Bucket='example', Key='archive/landing/numbers.csv')['Body'].read().decode().count('\\n'))") == "4")
                #expect(try moto.boto3("print(s3.list_objects_v2(Bucket='example', Prefix='landing/').get('KeyCount'))") == "0")
                let events = try await api.store.assetEvents(uri: "s3://example/archive/")
                #expect(events.count == 1 && events.first?.runId == run && events.first?.taskId == "archive")
            }
        }
    }

    @Test("transfers: upload, a glob sensor with a minimum size and a quiet period, list, download (same bytes), copy to another bucket, delete a prefix; a wrong secret's 403 names the connection and hides the secret")
    func transfers() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("flowkit-s3-e2e-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let content = (0..<500).map { "row,\($0)\n" }.joined()
        try Data(content.utf8).write(to: dir.appendingPathComponent("in.csv"))
        try await withStore { moto in
            try await withAPI(flows: allFlows + [s3Transfers, s3WrongSecret]) { api in
                let run = try #require(try await api.request("POST", "/api/v1/flows/s3_transfers/runs", token: LiveAPI.admin,
                                                             body: #"{"conf": {"dir": "\#(dir.path)"}}"#).json["runId"]?.stringValue)
                try await eventually("s3_transfers to finish", timeout: 60) { ["success", "failed"].contains(try await api.store.run(run).state) }
                let tis = Dictionary(uniqueKeysWithValues: try await api.store.taskInstances(runId: run).map { ($0.taskId, $0) })
                #expect(try await api.store.run(run).state == "success", "\(tis.mapValues { $0.error ?? "" })")
                #expect(tis["upload"]?.result?["bytes"]?.intValue == content.utf8.count && tis["upload"]?.result?["parts"] == 0)
                #expect(tis["wait_for_staged"]?.result?["count"] == 1)
                #expect(tis["list"]?.result?["count"] == 1 && tis["list"]?.result?["bytes"]?.intValue == content.utf8.count)
                #expect(try String(contentsOf: dir.appendingPathComponent("back.csv"), encoding: .utf8) == content)
                #expect(tis["copy"]?.result?["to"] == "s3://other/copied.csv")
                #expect(try moto.boto3("print(len(s3.get_object(Bucket='other', Key='copied.csv')['Body'].read()))") == String(content.utf8.count))
                #expect(tis["clean"]?.result?["count"] == 1)
                #expect(try moto.boto3("print(s3.list_objects_v2(Bucket='example', Prefix='staged/').get('KeyCount'))") == "0")

                let wrong = try #require(try await api.request("POST", "/api/v1/flows/s3_wrong_secret/runs", token: LiveAPI.admin,
                                                               body: "{}").json["runId"]?.stringValue)
                try await eventually("the wrong secret's run to fail", timeout: 60) { try await api.store.run(wrong).state == "failed" }
                let error = try #require(try await api.store.taskInstances(runId: wrong).first?.error)
                #expect(error.contains("403 SignatureDoesNotMatch") && error.contains("connection `lake_wrong`"), "\(error)")
                #expect(!error.contains("wrong-secret-value"))
            }
        }
    }

    @Test("S3 notifications: the same write posted twice (and as EventBridge, and ten times at once) starts one consumer run; a prefix asset sees every object under it; MinIO's encoded keys; bad input and missing auth refused")
    func notifications() async throws {
        try await withStore { moto in
            try await withAPI(flows: allFlows + [s3ObjectConsumer, s3PrefixConsumer]) { api in
                // A real write, told of in S3's shape.
                let etag = try moto.boto3("print(s3.put_object(Bucket='example', Key='landing/numbers.csv', Body=b'1\\n2\\n')['ETag'].strip('\"'))")
                func s3Shape(key: String, sequencer: String, name: String = "ObjectCreated:Put", source: String = "aws:s3") -> String {
                    #"{"Records": [{"eventVersion": "2.1", "eventSource": "\#(source)", "awsRegion": "us-east-1", "eventTime": "2026-12-04T05:00:00.000Z", "eventName": "\#(name)", "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": "example", "arn": "arn:aws:s3:::example"}, "object": {"key": "\#(key)", "size": 4, "eTag": "\#(etag)", "sequencer": "\#(sequencer)"}}}]}"#
                }
                func post(_ body: String, auth: String? = "Bearer s3-notify-secret", contentType: String = "application/json") async throws -> LiveAPI.Reply {
                    try await api.request("POST", "/api/v1/assets/events/s3", body: body, contentType: contentType,
                                          headers: auth.map { ["Authorization": $0] } ?? [:])
                }
                let first = try await post(s3Shape(key: "landing/numbers.csv", sequencer: "0055AED6DCD90281E5"))
                #expect(first.status == 201 && first.json["objects"] == 1 && first.json["duplicates"] == 0, "\(first.text)")
                // Two events: the object's and the prefix's; each consumer starts once.
                #expect(first.json["eventIds"]?.arrayValue?.count == 2 && first.json["runs"]?.arrayValue?.count == 2)
                let again = try await post(s3Shape(key: "landing/numbers.csv", sequencer: "0055AED6DCD90281E5"))
                #expect(again.status == 200 && again.json["duplicates"] == 1 && again.json["runs"] == [])
                let bridge = #"{"version": "0", "id": "2d1e5ae4-3c39-4a6b-9d6e-8f7e1a0b9c11", "detail-type": "Object Created", "source": "aws.s3", "time": "2026-12-04T05:00:00Z", "region": "us-east-1", "resources": ["arn:aws:s3:::example"], "detail": {"version": "0", "bucket": {"name": "example"}, "object": {"key": "landing/numbers.csv", "size": 4, "etag": "\#(etag)", "sequencer": "0055AED6DCD90281E5"}, "reason": "PutObject"}}"#
                #expect(try await post(bridge).json["duplicates"] == 1)

                // Ten deliveries of a new write at once: one records it.
                let burst = s3Shape(key: "landing/numbers.csv", sequencer: "0055AED6DCD90281F0")
                let statuses = try await withThrowingTaskGroup(of: Int.self) { g in
                    for _ in 0..<10 { g.addTask { try await post(burst).status } }
                    var out: [Int] = []
                    for try await s in g { out.append(s) }
                    return out
                }
                #expect(statuses.filter { $0 == 201 }.count == 1 && statuses.filter { $0 == 200 }.count == 9, "\(statuses)")

                let consumerRuns = try await api.store.runs(RunFilter(flowId: "s3_object_consumer", limit: 10))
                #expect(consumerRuns.count == 2)
                try await eventually("the consumer runs to succeed") {
                    try await api.store.runs(RunFilter(flowId: "s3_object_consumer", limit: 10)).allSatisfy { $0.state == "success" }
                }
                let seen = try #require(try await api.store.taskInstances(runId: consumerRuns.last!.runId).first?.result)
                #expect(seen["count"] == 1 && seen["extra"]?["etag"]?.stringValue == etag && seen["extra"]?["size"] == 4)

                // MinIO: `s3:`-prefixed names, keys form-encoded; the prefix consumer sees the decoded key.
                let minio = try await post(s3Shape(key: "landing/d%C3%ADa+1.csv", sequencer: "17E0F1", name: "s3:ObjectCreated:Put", source: "minio:s3"),
                                           auth: "s3-notify-secret")
                #expect(minio.status == 201)
                try await eventually("the prefix consumer's third run") { try await api.store.runs(RunFilter(flowId: "s3_prefix_consumer", limit: 10)).count == 3 }
                #expect(try await api.store.assetEvents(uri: "s3://example/landing/día 1.csv").count == 1)

                // Not creations, S3's test event, malformed bodies, no auth, an events token.
                let removed = try await post(s3Shape(key: "landing/numbers.csv", sequencer: "99", name: "ObjectRemoved:Delete"))
                #expect(removed.status == 200 && removed.json["ignored"] == 1 && removed.json["objects"] == 0)
                #expect(try await post(#"{"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "example"}"#).status == 200)
                let broken = try await post("{nope")
                #expect(broken.status == 400 && broken.json["error"] == "malformed_json")
                let notS3 = try await post(#"{"hello": "world"}"#)
                #expect(notS3.status == 400 && notS3.json["message"]?.stringValue?.contains("not an S3 event notification") == true)
                let noKey = try await post(#"{"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "example"}, "object": {}}}]}"#)
                #expect(noKey.status == 400 && noKey.json["message"]?.stringValue?.contains("Records[0]: `s3.object.key` is missing") == true)
                let anonymous = try await post(burst, auth: nil)
                #expect(anonymous.status == 401 && anonymous.json["message"]?.stringValue?.contains("FLOWKIT_CONN_S3_EVENTS") == true)
                #expect(try await post(burst, auth: "Bearer wrong").status == 401)
                // An SNS HTTPS subscription to https://sns:SECRET@host/…: basic auth with the secret as password.
                let basic = "Basic " + Data("sns:s3-notify-secret".utf8).base64EncodedString()
                let sns = #"{"Type": "Notification", "MessageId": "m-1", "Message": \#(JSONValue.string(burst).compactJSON)}"#
                // SNS posts its JSON as text/plain.
                let viaSNS = try await post(sns, auth: basic, contentType: "text/plain; charset=UTF-8")
                #expect(viaSNS.status == 200 && viaSNS.json["duplicates"] == 1, "\(viaSNS.text)")
                #expect(try await post(sns, auth: "Basic " + Data("sns:nope".utf8).base64EncodedString()).status == 401)
                #expect(try await post(burst, auth: "Bearer \(LiveAPI.events)").json["duplicates"] == 1)
                #expect(try await post(burst, auth: "Bearer \(LiveAPI.reader)").status == 403)
            }
        }
    }
}
