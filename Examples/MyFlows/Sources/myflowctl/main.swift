import FlowCommands
import MyFlows

// The whole flowctl — standalone, server, scheduler, worker, trigger, … — with your flows.
await FlowCtl.main(flows: myFlows)
