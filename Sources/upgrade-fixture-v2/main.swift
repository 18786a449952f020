import FlowCommands
import FlowKit
import UpgradeFixtureFlows

// Version 2 of upgrade_demo: `compute` triples (make faults' upgrade scenario).
await FlowCtl.main(flows: [upgradeDemo(version: "2") { n in ["answer": .int(n * 3), "code": "v2"] }])
