import FlowKit
import FlowKitTesting
import Flows
import Foundation
import Testing
@testable import WorkerRuntime
import Scheduler

let sensorChecks = Flow("sensor_checks", params: [Param("url", .string, default: "http://127.0.0.1:9/")]) { f in
    f.sensor("soft", pokeInterval: .milliseconds(200), timeout: .seconds(1), softFail: true) { _ in .notYet("never") }
    f.sensor("sql", pokeInterval: .milliseconds(200), timeout: .seconds(10),
             check: Sensors.sql(connection: "warehouse", query: "SELECT 1 AS one WHERE EXISTS (SELECT 1 FROM pg_tables WHERE tablename = 'sensor_flag')"))
    f.sensor("http", pokeInterval: .milliseconds(200), timeout: .seconds(1), softFail: true) { ctx in
        try await Sensors.http(ctx.param("url")?.stringValue ?? "")(ctx)
    }
}

let upstreamFlow = Flow("watched") { f in f.task("work") { _ in ["done": true] } }
let downstreamFlow = Flow("watcher") { f in
    f.sensor("wait_for_watched", waitingFor: "watched", pokeInterval: .milliseconds(200), timeout: .seconds(20))
}

@Suite("Sensors end to end", .serialized)
struct SensorEndToEndTests {
    @Test("example_sensor: pokes free the worker while the file is missing, all in one try's log; the file's size once it appears; a timeout fails it")
    func fileSensor() async throws {
        let data = FileManager.default.temporaryDirectory.appendingPathComponent("flowkit-sensor-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
        setenv("FLOWKIT_DATA_DIR", data.path, 1)
        defer { try? FileManager.default.removeItem(at: data) }
        // One worker slot: a sensor holding it between pokes would starve the other run.
        try await withSystem(workers: 0) { sys in
            sys.startWorker("w1", concurrency: 1)
            let run = try await sys.trigger("example_sensor", conf: ["file": "in/ready.txt"])
            try await eventually("a first poke") {
                (try await sys.store.taskInstances(runId: run).first { $0.taskId == "wait_for_file" }?.state) == "up_for_reschedule"
            }
            // Meanwhile the single slot serves another run.
            let other = try await sys.trigger("example_sleep", conf: ["seconds": 0])
            #expect(try await sys.waitForRun(other, timeout: 10) == "success")
            try await eventually("a second poke") {
                try await sys.store.logs(runId: run, taskId: "wait_for_file", tryNumber: 1, after: 0).lines
                    .filter { $0.line.hasPrefix("poke: not yet") }.count >= 2
            }
            try FileManager.default.createDirectory(at: data.appendingPathComponent("in"), withIntermediateDirectories: true)
            try Data("twelve bytes".utf8).write(to: data.appendingPathComponent("in/ready.txt"))
            #expect(try await sys.waitForRun(run, timeout: 20) == "success")
            let tis = Dictionary(uniqueKeysWithValues: try await sys.store.taskInstances(runId: run).map { ($0.taskId, $0) })
            #expect(tis["file_size"]?.result == 12)
            let sensor = try #require(tis["wait_for_file"])
            #expect(sensor.tryNumber == 1 && sensor.tries.count == 1)
            let log = try await sys.store.logs(runId: run, taskId: "wait_for_file", tryNumber: 1, after: 0).lines.map(\.line)
            #expect(log.filter { $0.hasPrefix("poke: not yet") }.count >= 2)
            #expect(log.last == "poke: ready")

            let late = try await sys.trigger("example_sensor", conf: ["file": "never.txt", "timeout": 1.5])
            #expect(try await sys.waitForRun(late, timeout: 20) == "failed")
            let timedOut = try #require(try await sys.store.taskInstances(runId: late).first { $0.taskId == "wait_for_file" })
            #expect(timedOut.state == "failed" && timedOut.error?.hasPrefix("sensor timed out after 1.5s:") == true)
            let escape = try await sys.trigger("example_sensor", conf: ["file": "../outside"])
            #expect(try await sys.waitForRun(escape, timeout: 20) == "failed")
        }
    }

    @Test("SQL, HTTP and soft-fail sensors; an external run sensor waits for the other flow's run of the same logical date")
    func otherSensors() async throws {
        // The worker reads its connections when it starts: the test database's URL is known
        // only then, so the sensor's connection points at it through a second worker.
        try await withSystem(flows: allFlows + [sensorChecks, upstreamFlow, downstreamFlow], workers: 0) { sys in
            setenv("FLOWKIT_CONN_WAREHOUSE", sys.url, 1)
            sys.startWorker("w1")
            sys.startWorker("w2")
            let run = try await sys.trigger("sensor_checks")
            try await eventually("the SQL sensor to poke") {
                (try await sys.store.taskInstances(runId: run).first { $0.taskId == "sql" }?.state) == "up_for_reschedule"
            }
            try await sys.sql("CREATE TABLE sensor_flag (x int)")
            #expect(try await sys.waitForRun(run, timeout: 20) == "success")
            let tis = Dictionary(uniqueKeysWithValues: try await sys.store.taskInstances(runId: run).map { ($0.taskId, $0) })
            #expect(tis["sql"]?.state == "success" && tis["sql"]?.result == ["one": "1"])
            #expect(tis["soft"]?.state == "skipped" && tis["soft"]?.error?.hasPrefix("sensor timed out after 1s: never") == true)
            #expect(tis["http"]?.state == "skipped")

            let date = Date(timeIntervalSince1970: 1_700_000_000)
            let watcher = try await sys.store.createRun(flowId: "watcher", kind: "manual", conf: [:], logicalDate: date, now: Date()).runId
            try await eventually("the watcher to poke") {
                (try await sys.store.taskInstances(runId: watcher).first?.state) == "up_for_reschedule"
            }
            _ = try await sys.store.createRun(flowId: "watched", kind: "manual", conf: [:], logicalDate: date, now: Date())
            #expect(try await sys.waitForRun(watcher, timeout: 20) == "success")
            let seen = try await sys.store.taskInstances(runId: watcher).first?.result
            #expect(seen?["state"] == "success" && seen?["flowId"] == "watched")
        }
    }
}
