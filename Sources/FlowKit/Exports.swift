// Flow authors import FlowKit alone: JSONValue, Instant and SHA256 come with it.
@_exported public import FlowJSON
