import FlowJSON
import FlowKit
import FlowKitTesting
import Flows
import Foundation
import Testing
@testable import WorkerRuntime
@testable import Scheduler

@Suite("Secrets in task logs", .serialized)
struct SecretMaskingTests {
    @Test("the masker hides connection values and the passwords inside URLs and keyword strings, longest first")
    func masker() {
        let m = SecretMasker(connections: ["db": "postgres://etl:s3cr%2Ft@dwh/warehouse", "kw": "host=a password=kw-pass dbname=x", "token": "tok_123456", "flag": "on"])
        #expect(m.mask("connecting to postgres://etl:s3cr%2Ft@dwh/warehouse now") == "connecting to *** now")
        #expect(m.mask("password was s3cr/t or s3cr%2Ft") == "password was *** or ***")
        #expect(m.mask("kw-pass and tok_123456") == "*** and ***")
        #expect(m.mask("turn it on") == "turn it on")  // too short to be a secret
        // An S3 connection: the secret key (percent-encoded in the URL) and a session token in its query.
        let s3 = SecretMasker(connections: ["lake": "s3://AKID:wJal%2FrXU@minio:9000/?region=eu-west-1&session_token=FwoGZXIvYXdz"])
        #expect(s3.mask("signed with wJal/rXU, token FwoGZXIvYXdz") == "signed with ***, token ***")
        // Every option the API masks in a stored connection's URL is masked in logs too.
        let api = SecretMasker(connections: ["svc": "https://api.example.com/v1?api_key=k-98765&access_token=at-4321&region=eu"])
        #expect(api.mask("called with k-98765 and at-4321 in eu") == "called with *** and *** in eu")
    }

    @Test("a task that logs a connection's URL and fails with its password stores neither")
    func endToEnd() async throws {
        setenv("FLOWKIT_CONN_SECRETDB", "postgres://etl:hunter22@db.internal/warehouse", 1)
        defer { unsetenv("FLOWKIT_CONN_SECRETDB") }
        let flow = Flow("leaky") { f in
            f.task("connect") { ctx in
                let url = try ctx.connection("secretdb")
                ctx.log("connecting to \(url)")
                throw TaskError("login failed for etl with password hunter22")
            }
        }
        try await withSystem(flows: allFlows + [flow]) { sys in
            let run = try await sys.trigger("leaky")
            #expect(try await sys.waitForRun(run) == "failed")
            let ti = try #require(try await sys.store.taskInstances(runId: run).first)
            #expect(ti.error == "login failed for etl with password ***")
            let lines = try await sys.store.logs(runId: run, taskId: "connect", tryNumber: 1, after: 0).lines.map(\.line)
            #expect(lines.contains("connecting to ***"), "\(lines)")
            #expect(!lines.joined().contains("hunter22"))
        }
    }

    @Test("a connection's password is masked in every text of a try that leaves the worker: errors, a sensor's reason, a skip's reason, a result's strings and keys, a timeout")
    func everyOutcome() async throws {
        setenv("FLOWKIT_CONN_SECRETDB", "postgres://etl:hunter22@db.internal/warehouse", 1)
        defer { unsetenv("FLOWKIT_CONN_SECRETDB") }
        let flow = Flow("leaky_outcomes") { f in
            f.task("result") { _ in ["dsn": "postgres://etl:hunter22@db.internal/warehouse", "hunter22": ["pw=hunter22"]] }
            f.task("skip") { _ in throw TaskSkipped("nothing to load with password hunter22") }
            f.sensor("sensor", pokeInterval: .milliseconds(200), timeout: .milliseconds(700)) { _ in .notYet("no table yet (tried hunter22)") }
            f.task("slow", timeout: .milliseconds(300)) { ctx in
                ctx.log("about to wait with hunter22")
                try await Task.sleep(for: .seconds(30))
                return nil
            }
        }
        try await withSystem(flows: allFlows + [flow]) { sys in
            let run = try await sys.trigger("leaky_outcomes")
            _ = try await sys.waitForRun(run, timeout: 60)
            let tis = try await sys.store.taskInstances(runId: run)
            func ti(_ id: String) throws -> TaskInstanceRecord { try #require(tis.first { $0.taskId == id }) }
            #expect(try ti("result").result == ["dsn": "***", "***": ["pw=***"]])
            #expect(try ti("skip").state == "skipped" && ti("skip").error == "nothing to load with password ***")
            #expect(try ti("sensor").state == "failed")
            #expect(try ti("slow").state == "failed" && (ti("slow").error ?? "").contains("timed out"))
            let everything = tis.map { "\($0.error ?? "") \($0.result.map { $0.compactJSON } ?? "") \($0.tries.map { "\($0)" })" }.joined()
            #expect(!everything.contains("hunter22"), "\(everything)")
            for t in ["sensor", "slow"] {
                let lines = try await sys.store.logs(runId: run, taskId: t, tryNumber: 1, after: 0).lines.map(\.line)
                #expect(!lines.joined().contains("hunter22"), "\(lines)")
                if t == "sensor" { #expect(lines.contains { $0.contains("no table yet (tried ***)") }, "\(lines)") }
            }
        }
    }
}
