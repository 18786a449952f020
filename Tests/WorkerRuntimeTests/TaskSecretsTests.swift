import FlowKit
import Foundation
import Testing
import WorkerRuntime

@Suite("Task secrets on the worker")
struct TaskSecretsTests {
    let key = "q2NV0bYQm6Z0E5m3vF1hVj0k0q3kq7K1c9m9cW8mC1o="

    func sealed(_ ring: SecretKeyring, _ c: [String: String], _ v: [String: String]) throws -> JSONValue {
        var cs: [String: JSONValue] = [:], vs: [String: JSONValue] = [:]
        for (n, x) in c { cs[n] = .string(try ring.seal(x, context: "connection:\(n)")) }
        for (n, x) in v { vs[n] = .string(try ring.seal(x, context: "variable:\(n)")) }
        return ["connections": .object(cs), "variables": .object(vs)]
    }

    @Test("what the message carries is opened; the worker's own values win; something needed and found nowhere fails naming it and where to set it")
    func resolve() throws {
        let ring = try SecretKeyring(key)
        let msg = try sealed(ring, ["warehouse": "postgresql://store", "lake": "s3://k:s@h"], ["threshold": "0.5"])
        let worker = TaskSecrets(environment: ["FLOWKIT_SECRET_KEY": key, "FLOWKIT_CONN_LAKE": "s3://own", "FLOWKIT_VAR_LIMIT": "7"], workerName: "w1")
        let got = try worker.resolve(carried: msg, connections: ["lake", "warehouse"], variables: ["threshold", "limit"])
        #expect(got.connections == ["warehouse": "postgresql://store", "lake": "s3://own"])
        #expect(got.variables == ["threshold": "0.5", "limit": "7"])
        // Names with `-` and `.` are found as the environment spells them.
        let dashed = TaskSecrets(environment: ["FLOWKIT_CONN_MY_DB": "postgresql://own", "FLOWKIT_VAR_LIMITS_MAX": "9"], workerName: "w1")
        let got2 = try dashed.resolve(carried: nil, connections: ["my-db"], variables: ["limits.max"])
        #expect(got2.connections["my-db"] == "postgresql://own" && got2.variables == ["limits.max": "9"])
        do { _ = try worker.resolve(carried: msg, connections: ["warehouse", "missing"], variables: []); Issue.record("no error") } catch let e as TaskError {
            #expect(e.message == "connection `missing` is not set: set it with `flowctl connections set missing --uri URL` (or FLOWKIT_CONN_MISSING on worker `w1`)")
        }
        do { _ = try worker.resolve(carried: nil, connections: [], variables: ["nope"]); Issue.record("no error") } catch let e as TaskError {
            #expect(e.message.contains("variable `nope` is not set") && e.message.contains("FLOWKIT_VAR_NOPE"))
        }
    }

    @Test("a worker without the key, or with another one, says so instead of running with nothing")
    func keys() throws {
        let msg = try sealed(try SecretKeyring(key), ["warehouse": "postgresql://store"], [:])
        do { _ = try TaskSecrets(environment: [:], workerName: "w2").resolve(carried: msg, connections: ["warehouse"], variables: []); Issue.record("no error") }
        catch let e as TaskError { #expect(e.message.contains("worker `w2` has no FLOWKIT_SECRET_KEY")) }
        let other = TaskSecrets(environment: ["FLOWKIT_SECRET_KEY": SecretKeyring.newKey()], workerName: "w3")
        do { _ = try other.resolve(carried: msg, connections: ["warehouse"], variables: []); Issue.record("no error") }
        catch let e as TaskError { #expect(e.message.contains("does not hold")) }
        let broken = TaskSecrets(environment: ["FLOWKIT_SECRET_KEY": "short"], workerName: "w4")
        do { _ = try broken.resolve(carried: msg, connections: ["warehouse"], variables: []); Issue.record("no error") }
        catch let e as TaskError { #expect(e.message.contains("unusable")) }
        // A sealed value moved under another name does not open.
        let moved: JSONValue = ["connections": ["other": msg["connections"]!["warehouse"]!]]
        #expect(throws: TaskError.self) { try TaskSecrets(environment: ["FLOWKIT_SECRET_KEY": key], workerName: "w5").resolve(carried: moved, connections: ["other"], variables: []) }
    }
}
