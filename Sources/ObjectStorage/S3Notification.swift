public import FlowJSON
import Foundation

/// One object written, as an S3 event notification tells it.
public struct S3NotificationRecord: Sendable, Equatable {
    public var bucket: String
    /// Decoded (S3 and MinIO send keys URL-encoded in `Records`; EventBridge sends them as they are).
    public var key: String
    public var size: Int?
    public var etag: String?
    /// `ObjectCreated:Put`, `ObjectCreated:CompleteMultipartUpload`, … (`Object Created` from EventBridge).
    public var eventName: String
    public var sequencer: String?
    public var versionId: String?
    public var eventTime: String?
    /// What identifies this write across redeliveries, and across the two ways S3 may tell of it
    /// (a bucket notification and EventBridge carry the same sequencer).
    public var dedupeKey: String

    /// `s3://bucket/key`: the asset the write updates.
    public var uri: String { "s3://\(bucket)/\(key)" }

    /// The asset event's `extra`.
    public var extra: JSONValue {
        var o: [String: JSONValue] = ["bucket": .string(bucket), "key": .string(key), "eventName": .string(eventName)]
        if let size { o["size"] = .int(size) }
        if let etag { o["etag"] = .string(etag) }
        if let sequencer { o["sequencer"] = .string(sequencer) }
        if let versionId { o["versionId"] = .string(versionId) }
        if let eventTime { o["eventTime"] = .string(eventTime) }
        return .object(o)
    }
}

/// The bodies S3-compatible stores post for bucket notifications, read into records:
///
/// * S3's and MinIO's `{"Records": [{"eventSource": "aws:s3" | "minio:s3", "eventName", "s3": {"bucket", "object"}}…]}`
///   (also inside an SNS `Notification`'s `Message`, as an HTTPS subscription delivers it);
/// * EventBridge's `{"source": "aws.s3", "detail-type": "Object Created", "id", "detail": {"bucket", "object"}}`;
/// * S3's `s3:TestEvent`, sent when a notification is configured: no records.
///
/// Only object creations become records; other events (removals, restores, …) are counted as ignored.
public enum S3Notification {
    public struct Parsed: Sendable {
        public var records: [S3NotificationRecord]
        /// Events that are not object creations.
        public var ignored: Int
    }

    public struct Malformed: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    public static func parse(_ body: JSONValue) throws -> Parsed {
        guard let o = body.objectValue else { throw Malformed(description: "an S3 event notification is a JSON object") }
        if o["Type"]?.stringValue == "Notification", let message = o["Message"]?.stringValue {
            guard let inner = try? JSONValue.parse(message) else { throw Malformed(description: "the SNS notification's `Message` is not JSON") }
            return try parse(inner)
        }
        if o["Type"]?.stringValue == "SubscriptionConfirmation" {
            throw Malformed(description: "this is an SNS subscription confirmation: confirm it by opening its SubscribeURL, then S3's notifications will follow")
        }
        if o["Event"]?.stringValue == "s3:TestEvent" { return Parsed(records: [], ignored: 0) }
        if let records = o["Records"] {
            guard let list = records.arrayValue else { throw Malformed(description: "`Records` must be an array") }
            var out: [S3NotificationRecord] = [], ignored = 0
            for (i, r) in list.enumerated() {
                func bad(_ why: String) -> Malformed { Malformed(description: "Records[\(i)]: \(why)") }
                guard let name = r["eventName"]?.stringValue else { throw bad("`eventName` is missing") }
                // MinIO prefixes its names with `s3:`.
                let event = name.hasPrefix("s3:") ? String(name.dropFirst(3)) : name
                guard event.hasPrefix("ObjectCreated:") else { ignored += 1; continue }
                guard let bucket = r["s3"]?["bucket"]?["name"]?.stringValue, !bucket.isEmpty else { throw bad("`s3.bucket.name` is missing") }
                guard let rawKey = r["s3"]?["object"]?["key"]?.stringValue, !rawKey.isEmpty else { throw bad("`s3.object.key` is missing") }
                let key = formDecoded(rawKey)
                let object = r["s3"]?["object"]
                let sequencer = object?["sequencer"]?.stringValue
                let version = object?["versionId"]?.stringValue
                let etag = object?["eTag"]?.stringValue ?? object?["etag"]?.stringValue
                let time = r["eventTime"]?.stringValue
                let request = r["responseElements"]?["x-amz-request-id"]?.stringValue
                out.append(try check(S3NotificationRecord(
                    bucket: bucket, key: key, size: object?["size"]?.intValue, etag: etag, eventName: event, sequencer: sequencer,
                    versionId: version, eventTime: time,
                    dedupeKey: dedupe(bucket, key, sequencer: sequencer, fallback: [request, version, etag, time].map { $0.map { String($0.prefix(256)) } })),
                    "Records[\(i)]"))
            }
            return Parsed(records: out, ignored: ignored)
        }
        if o["source"]?.stringValue == "aws.s3", let type = o["detail-type"]?.stringValue {
            guard type == "Object Created" else { return Parsed(records: [], ignored: 1) }
            guard let bucket = o["detail"]?["bucket"]?["name"]?.stringValue, !bucket.isEmpty else {
                throw Malformed(description: "EventBridge event: `detail.bucket.name` is missing")
            }
            guard let key = o["detail"]?["object"]?["key"]?.stringValue, !key.isEmpty else {
                throw Malformed(description: "EventBridge event: `detail.object.key` is missing")
            }
            let object = o["detail"]?["object"]
            let sequencer = object?["sequencer"]?.stringValue
            return Parsed(records: [try check(S3NotificationRecord(
                bucket: bucket, key: key, size: object?["size"]?.intValue, etag: object?["etag"]?.stringValue,
                eventName: "ObjectCreated:" + (o["detail"]?["reason"]?.stringValue ?? "Put"), sequencer: sequencer,
                versionId: object?["version-id"]?.stringValue, eventTime: o["time"]?.stringValue,
                dedupeKey: dedupe(bucket, key, sequencer: sequencer, fallback: [o["id"]?.stringValue.map { String($0.prefix(256)) }])),
                "EventBridge event")], ignored: 0)
        }
        throw Malformed(description: "not an S3 event notification: expected `Records` (S3, MinIO), an EventBridge event from `aws.s3`, or an SNS notification carrying one")
    }

    /// A record's strings as S3 allows them: a bucket of at most 255 characters, a key of at most
    /// 1,024 bytes, other fields of at most 256; none with a NUL (PostgreSQL's text cannot hold one).
    static func check(_ r: S3NotificationRecord, _ place: String) throws -> S3NotificationRecord {
        func bad(_ why: String) -> Malformed { Malformed(description: "\(place): \(why)") }
        if r.bucket.utf8.count > 255 { throw bad("the bucket name is longer than 255 characters") }
        if r.key.utf8.count > 1024 { throw bad("the object key is longer than 1,024 bytes") }
        for (name, v) in [("bucket", r.bucket), ("key", r.key), ("eTag", r.etag), ("sequencer", r.sequencer), ("versionId", r.versionId),
                          ("eventTime", r.eventTime), ("eventName", r.eventName)] as [(String, String?)] {
            guard let v else { continue }
            if v.unicodeScalars.contains("\u{0}") { throw bad("`\(name)` holds a NUL character") }
            if name != "key" && name != "bucket" && v.utf8.count > 256 { throw bad("`\(name)` is longer than 256 bytes") }
        }
        if let size = r.size, size < 0 { throw bad("`size` is negative") }
        return r
    }

    static func dedupe(_ bucket: String, _ key: String, sequencer: String?, fallback: [String?]) -> String {
        let id = sequencer.map { "seq:" + $0 } ?? fallback.compactMap { $0 }.first.map { "id:" + $0 } ?? "id:none"
        return "\(bucket)/\(key)#\(id)"
    }

    /// `+` as a space, then percent-decoding (how S3 and MinIO encode keys in `Records`).
    static func formDecoded(_ s: String) -> String {
        let spaced = s.replacingOccurrences(of: "+", with: " ")
        return spaced.removingPercentEncoding ?? spaced
    }
}
