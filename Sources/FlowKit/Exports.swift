// Flow authors import FlowKit alone: JSONValue, Instant and SHA256 come with it, and the S3 client.
@_exported public import FlowJSON
@_exported public import ObjectStorage
