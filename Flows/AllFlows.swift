public import FlowKit

/// Every flow this build of `flowctl` knows, handed to the command tree in `main.swift`.
public let allFlows: [Flow] = [
    catalunyaDataPipeline,
    lakehouseEndToEnd,
    exampleRetry,
    exampleSleep,
    exampleHourly,
    exampleBranch,
    exampleAlert,
    exampleAssetProducer,
    exampleAssetConsumer,
    exampleMapping,
    examplePool,
    exampleSensor,
    exampleApproval,
    exampleWebhook,
    exampleTriggerParent,
    exampleTriggerChild,
    exampleFollowup,
    exampleSQL,
    examplePython,
    exampleDbtModels,
    exampleS3,
]
