import Foundation
import Testing
@testable import FlowKit
import Flows

@Suite("JSON form and hash")
struct FlowDefinitionTests {
    func sample(retries: Int = 1) -> Flow {
        Flow("sample", description: "d", tags: ["t"], schedule: .cron("0 6 * * *", timeZone: "Europe/Madrid"),
             params: [Param("n", .int, default: 3)], defaults: TaskOptions(retry: RetryPolicy(retries: retries))) { f in
            let a = f.task("a") { _ in nil }
            let b = f.shell("b", script: "echo $FLOWKIT_PARAM_N", environment: ["X": "1"])
            let c = f.celery("c", name: "tasks.add", queue: "python")
            a --> [b, c]
        }
    }

    @Test("the JSON form round-trips")
    func roundTrip() throws {
        let d = FlowDefinition(sample())
        let back = try FlowDefinition.decode(try d.json())
        #expect(back == d)
        #expect(back.edges == [["a", "b"], ["a", "c"]])
        #expect(back.task("b")?.command?.argv == ["/bin/sh", "-c", "echo $FLOWKIT_PARAM_N"])
        #expect(back.task("c")?.celeryName == "tasks.add")
        #expect(back.task("c")?.queue == "python")
        #expect(back.task("a")?.retry.retries == 1)
    }

    @Test("the hash is stable for the same flow and changes when the flow does")
    func hashStability() throws {
        let h1 = try FlowDefinition(sample()).contentHash()
        let h2 = try FlowDefinition(sample()).contentHash()
        let h3 = try FlowDefinition(sample(retries: 2)).contentHash()
        #expect(h1 == h2)
        #expect(h1 != h3)
        #expect(h1.count == 64)
    }

    @Test("SHA-256 matches the standard test vectors")
    func sha256() {
        #expect(SHA256.hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(SHA256.hex(String(repeating: "a", count: 1000)) == "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3")
    }

    @Test("every shipped flow validates and serializes")
    func shippedFlows() throws {
        let registry = try FlowRegistry(allFlows)
        #expect(registry.ids == ["catalunya_data_pipeline", "example_alert", "example_approval", "example_asset_consumer", "example_asset_producer", "example_branch", "example_dbt_models", "example_followup", "example_hourly", "example_mapping", "example_pool", "example_python", "example_retry", "example_s3", "example_sensor", "example_sleep", "example_sql", "example_trigger_child", "example_trigger_parent", "example_webhook", "lakehouse_end_to_end"])
        for f in allFlows {
            let d = FlowDefinition(f)
            #expect(try FlowDefinition.decode(try d.json()) == d)
        }
        // An S3 task's definition names its connection, bucket and operation; the sensor is a sensor.
        let s3 = FlowDefinition(try registry.flow("example_s3"))
        #expect(s3.tasks.map(\.kind) == ["sensor", "swift", "s3"])
        #expect(s3.task("archive")?.s3 == S3TaskSpec(connection: "lake", bucket: "example",
                                                     operation: .move(from: "{{ params.key }}", to: "archive/{{ params.key }}")))
        #expect(s3.task("archive")?.outlets == ["s3://example/archive/"])
        #expect(s3.params.map(\.name) == ["key"] && s3.params.first?.defaultValue == "landing/numbers.csv")
        for (op, problem) in [(S3Operation.delete(prefix: ""), "would empty the bucket"), (.upload(from: "", to: "k"), "needs a local path"),
                              (.copy(from: "a", to: ""), "needs a target key")] {
            let bad = Flow("bad_s3") { f in f.s3("t", connection: "lake", bucket: "b", op) }
            #expect(throws: FlowValidationError.self) { try bad.validate() }
            do { try bad.validate() } catch { #expect("\(error)".contains(problem), "\(error)") }
        }
        let cat = try registry.flow("catalunya_data_pipeline")
        #expect(cat.schedule == .cron("0 */6 * * *", timeZone: "Europe/Madrid"))
        #expect(cat.tasks.map(\.id) == ["extract", "validate", "load_staging", "build_marts", "quality_checks"])
        let opts = cat.effectiveOptions(cat.task("extract")!)
        #expect(opts.retry?.retries == 2 && opts.retry?.delaySeconds == 300)
        let lake = FlowGraph(FlowDefinition(try registry.flow("lakehouse_end_to_end")))
        #expect(Set(lake.downstream["bronze_to_silver"] ?? []) == ["gold_revenue_by_country", "gold_customer_orders"])
    }
}

@Suite("Flow-to-flow declarations")
struct FlowTriggerDeclarationTests {
    @Test("a trigger task or an after: naming a flow the registry lacks is refused with a did-you-mean; a flow cannot follow itself")
    func registryChecks() throws {
        let child = Flow("child_flow") { f in f.task("t") { _ in nil } }
        let typo = Flow("parent_flow") { f in f.triggerFlow("start", flow: "chld_flow") }
        #expect(throws: FlowValidationError.invalidOption(flow: "parent_flow",
                                                          detail: "trigger task `start` starts `chld_flow`, which is not a registered flow; did you mean `child_flow`?")) {
            try FlowRegistry([child, typo])
        }
        let after = Flow("after_flow", after: [.success(of: "child_flw")]) { f in f.task("t") { _ in nil } }
        #expect(throws: FlowValidationError.invalidOption(flow: "after_flow",
                                                          detail: "after: upstream flow `child_flw`, which is not a registered flow; did you mean `child_flow`?")) {
            try FlowRegistry([child, after])
        }
        let selfish = Flow("selfish", after: [.success(of: "selfish")]) { f in f.task("t") { _ in nil } }
        #expect(throws: FlowValidationError.invalidOption(flow: "selfish", detail: "after: a flow cannot be triggered by its own runs")) {
            try selfish.validate()
        }
        let conf = Flow("conf_flow") { f in
            let a = f.task("a") { _ in nil }
            f.triggerFlow("start", flow: "child_flow", confFromResultOf: a)
        }
        try FlowRegistry([child, conf])
        #expect(conf.task("start")?.upstream == ["a"])
        let def = FlowDefinition(conf)
        #expect(def.task("start")?.kind == "trigger_flow" && def.task("start")?.queue == TriggerFlowSpec.internalQueue)
        #expect(def.task("start")?.triggerFlow?.confFromResultOf == "a")
    }
}
