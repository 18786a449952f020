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
}
