import Foundation
import Testing
@testable import FlowKit

@Suite("Secret keys and task needs")
struct SecretKeyringTests {
    let key = "q2NV0bYQm6Z0E5m3vF1hVj0k0q3kq7K1c9m9cW8mC1o="

    @Test("seal and open round-trip, bound to the name; another key, a moved or altered value, and a malformed key are refused with a message")
    func sealOpen() throws {
        let ring = try SecretKeyring(key)
        let sealed = try ring.seal("postgresql://u:pw@h/db", context: "connection:warehouse")
        #expect(sealed.hasPrefix("fk1:\(ring.primaryKeyId):") && !sealed.contains("pw@h"))
        #expect(try ring.open(sealed, context: "connection:warehouse") == "postgresql://u:pw@h/db")
        // Two seals of one value differ (a fresh nonce each time).
        #expect(try ring.seal("x", context: "c") != ring.seal("x", context: "c"))
        #expect(throws: SecretError.self) { try ring.open(sealed, context: "connection:other") }
        var altered = Array(sealed)
        altered[altered.count - 3] = altered[altered.count - 3] == "A" ? "B" : "A"
        #expect(throws: SecretError.self) { try ring.open(String(altered), context: "connection:warehouse") }
        let other = try SecretKeyring(SecretKeyring.newKey())
        do { _ = try other.open(sealed, context: "connection:warehouse"); Issue.record("opened with another key") } catch let e as SecretError {
            #expect(e.message.contains("sealed with key \(ring.primaryKeyId)") && e.message.contains("FLOWKIT_SECRET_KEY"))
        }
        #expect(throws: SecretError.self) { try ring.open("plain text", context: "variable:x") }
        for bad in ["", "short", "not-base64-at-all-but-long-enough-to-be-a-key!!", Data(repeating: 1, count: 16).base64EncodedString()] {
            do { _ = try SecretKeyring(bad); Issue.record("accepted `\(bad)`") } catch let e as SecretError {
                #expect(e.message.contains("FLOWKIT_SECRET_KEY"), "\(e)")
            }
        }
        // 64 hex digits are a key too.
        #expect(try SecretKeyring(String(repeating: "ab", count: 32)).keyIds.count == 1)
    }

    @Test("rotation: NEW,OLD seals with NEW and opens both")
    func rotation() throws {
        let old = try SecretKeyring(key)
        let newKey = SecretKeyring.newKey()
        let both = try SecretKeyring(" \(newKey) , \(key) ")
        #expect(both.keyIds == [try SecretKeyring(newKey).primaryKeyId, old.primaryKeyId])
        let sealedOld = try old.seal("v", context: "variable:k")
        #expect(try both.open(sealedOld, context: "variable:k") == "v")
        #expect(SecretKeyring.keyId(of: try both.seal("v", context: "variable:k")) == both.primaryKeyId)
        #expect(try SecretKeyring.fromEnvironment([:]) == nil)
        #expect(try SecretKeyring.fromEnvironment(["FLOWKIT_SECRET_KEY": key])?.primaryKeyId == old.primaryKeyId)
    }

    @Test("a task's needs: declared, and the connection of SQL, S3 and sensor tasks; the definition keeps other tasks' hashes; bad names are refused")
    func needs() throws {
        let flow = Flow("needs") { f in
            f.task("swift", connections: ["api"], variables: ["threshold"]) { _ in nil }
            f.sql("sql", connection: "warehouse", sql: "SELECT 1")
            f.s3("s3", connection: "lake", bucket: "b", .list(prefix: "x/"))
            f.sensor("wait", .sql(connection: "replica", query: "SELECT 1"))
            f.shell("plain", script: "true").needs(variables: ["b", "a", "b"])
            f.task("none") { _ in nil }
        }
        let d = FlowDefinition(flow)
        #expect(d.task("swift")?.neededConnections == ["api"] && d.task("swift")?.neededVariables == ["threshold"])
        #expect(d.task("sql")?.neededConnections == ["warehouse"] && d.task("sql")?.connections == nil)
        #expect(d.task("s3")?.neededConnections == ["lake"])
        #expect(d.task("wait")?.neededConnections == ["replica"])
        #expect(d.task("plain")?.variables == ["a", "b"])
        #expect(d.task("none")?.needsStore == false && d.task("sql")?.needsStore == true)
        #expect(try !d.json().contains("\"connections\":null"))
        let (c, v) = d.needs
        #expect(c == ["api": ["swift"], "warehouse": ["sql"], "lake": ["s3"], "replica": ["wait"]] && v == ["threshold": ["swift"], "a": ["plain"], "b": ["plain"]])
        // A flow without needs hashes as before this field existed: no key is added.
        let plain = Flow("plain") { f in f.task("t") { _ in nil } }
        #expect(try !FlowDefinition(plain).json().contains("variables"))
        let bad = Flow("bad") { f in f.task("t", connections: ["no spaces"]) { _ in nil } }
        #expect(throws: FlowValidationError.self) { try bad.validate() }
    }

    @Test("variables reach a process as FLOWKIT_VAR_<NAME>; ctx.variable and ctx.jsonVariable name what is missing and where to set it")
    func context() throws {
        var ctx = TaskContext(flowId: "f", runId: "r", taskId: "t", tryNumber: 1, logicalDate: Date(), dataIntervalStart: Date(), dataIntervalEnd: Date(),
                              params: [:], upstream: [:], log: .discard)
        ctx.variables = ["limits.max-rows": "10", "json": #"{"a": 1}"#]
        #expect(ctx.processEnvironment["FLOWKIT_VAR_LIMITS_MAX_ROWS"] == "10")
        #expect(try ctx.jsonVariable("json") == ["a": 1])
        do { _ = try ctx.variable("missing"); Issue.record("no error") } catch let e as TaskError {
            #expect(e.message.contains("flowctl variables set missing") && e.message.contains("FLOWKIT_VAR_MISSING"))
        }
        do { _ = try ctx.connection("warehouse"); Issue.record("no error") } catch let e as TaskError {
            #expect(e.message.contains("connections: [\"warehouse\"]") && e.message.contains("flowctl connections set warehouse"))
        }
    }
}
