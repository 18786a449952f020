import FlowCommands
import Flows

await FlowCtl.main(flows: allFlows)
