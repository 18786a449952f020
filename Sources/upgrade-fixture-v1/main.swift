import FlowCommands
import FlowKit
import UpgradeFixtureFlows

// Version 1 of upgrade_demo: `compute` doubles (make faults' upgrade scenario).
await FlowCtl.main(flows: [upgradeDemo(version: "1") { n in ["answer": .int(n * 2), "code": "v1"] }])
