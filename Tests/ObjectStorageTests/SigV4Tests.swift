import FlowJSON
import Foundation
@testable import ObjectStorage
import Testing

/// AWS's published Signature Version 4 test suite (docs.aws.amazon.com/general/latest/gr/
/// signature-v4-test-suite.html): service `service`, region `us-east-1`, key AKIDEXAMPLE, signed
/// at 2015-08-30T12:36:00Z. The cases whose paths need normalising or double-encoding are left
/// out: S3 takes a path as it is, encoded once.
struct SigV4SuiteCase: Sendable, CustomTestStringConvertible {
    let name: String
    let method: String
    let path: String
    let query: [(String, String)]
    let headers: [(String, String)]
    let canonicalRequest: String
    let signature: String
    var testDescription: String { name }
}

let suiteDate = Date(timeIntervalSince1970: 1_440_938_160)   // 2015-08-30T12:36:00Z
let host = ("Host", "example.amazonaws.com")
let amzDate = ("X-Amz-Date", "20150830T123600Z")
let emptyHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

let suite: [SigV4SuiteCase] = [
    .init(name: "get-vanilla", method: "GET", path: "/", query: [], headers: [host, amzDate],
          canonicalRequest: "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n" + emptyHash,
          signature: "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
    .init(name: "get-vanilla-empty-query-key", method: "GET", path: "/", query: [("Param1", "value1")], headers: [host, amzDate],
          canonicalRequest: "GET\n/\nParam1=value1\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n" + emptyHash,
          signature: "a67d582fa61cc504c4bae71f336f98b97f1ea3c7a6bfe1b6e45aec72011b9aeb"),
    .init(name: "get-vanilla-query-order-key", method: "GET", path: "/", query: [("Param1", "value2"), ("Param1", "Value1")], headers: [host, amzDate],
          canonicalRequest: "GET\n/\nParam1=Value1&Param1=value2\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n" + emptyHash,
          signature: "eedbc4e291e521cf13422ffca22be7d2eb8146eecf653089df300a15b2382bd1"),
    .init(name: "get-vanilla-query-order-key-case", method: "GET", path: "/", query: [("Param2", "value2"), ("Param1", "value1")], headers: [host, amzDate],
          canonicalRequest: "GET\n/\nParam1=value1&Param2=value2\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n" + emptyHash,
          signature: "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"),
    .init(name: "get-vanilla-query-order-value", method: "GET", path: "/", query: [("Param1", "value2"), ("Param1", "value1")], headers: [host, amzDate],
          canonicalRequest: "GET\n/\nParam1=value1&Param1=value2\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n" + emptyHash,
          signature: "5772eed61e12b33fae39ee5e7012498b51d56abc0abb7c60486157bd471c4694"),
    .init(name: "get-vanilla-utf8-query", method: "GET", path: "/", query: [("ሴ", "bar")], headers: [host, amzDate],
          canonicalRequest: "GET\n/\n%E1%88%B4=bar\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n" + emptyHash,
          signature: "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04"),
    .init(name: "get-unreserved", method: "GET", path: "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", query: [],
          headers: [host, amzDate],
          canonicalRequest: "GET\n/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n" + emptyHash,
          signature: "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f"),
    .init(name: "get-header-key-duplicate", method: "GET", path: "/", query: [],
          headers: [host, ("My-Header1", "value2"), ("My-Header1", "value2"), ("My-Header1", "value1"), amzDate],
          canonicalRequest: "GET\n/\n\nhost:example.amazonaws.com\nmy-header1:value2,value2,value1\nx-amz-date:20150830T123600Z\n\nhost;my-header1;x-amz-date\n" + emptyHash,
          signature: "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea"),
    .init(name: "get-header-value-order", method: "GET", path: "/", query: [],
          headers: [host, ("My-Header1", "value4"), ("My-Header1", "value1"), ("My-Header1", "value3"), ("My-Header1", "value2"), amzDate],
          canonicalRequest: "GET\n/\n\nhost:example.amazonaws.com\nmy-header1:value4,value1,value3,value2\nx-amz-date:20150830T123600Z\n\nhost;my-header1;x-amz-date\n" + emptyHash,
          signature: "08c7e5a9acfcfeb3ab6b2185e75ce8b1deb5e634ec47601a50643f830c755c01"),
    .init(name: "get-header-value-trim", method: "GET", path: "/", query: [],
          headers: [host, ("My-Header1", " value1"), ("My-Header2", " \"a   b   c\""), amzDate],
          canonicalRequest: "GET\n/\n\nhost:example.amazonaws.com\nmy-header1:value1\nmy-header2:\"a b c\"\nx-amz-date:20150830T123600Z\n\nhost;my-header1;my-header2;x-amz-date\n" + emptyHash,
          signature: "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"),
    .init(name: "post-vanilla", method: "POST", path: "/", query: [], headers: [host, amzDate],
          canonicalRequest: "POST\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n" + emptyHash,
          signature: "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),
    .init(name: "post-vanilla-query", method: "POST", path: "/", query: [("Param1", "value1")], headers: [host, amzDate],
          canonicalRequest: "POST\n/\nParam1=value1\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n" + emptyHash,
          signature: "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11"),
    .init(name: "post-header-key-sort", method: "POST", path: "/", query: [], headers: [host, ("My-Header1", "value1"), amzDate],
          canonicalRequest: "POST\n/\n\nhost:example.amazonaws.com\nmy-header1:value1\nx-amz-date:20150830T123600Z\n\nhost;my-header1;x-amz-date\n" + emptyHash,
          signature: "c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c"),
    .init(name: "post-header-value-case", method: "POST", path: "/", query: [], headers: [host, ("My-Header1", "VALUE1"), amzDate],
          canonicalRequest: "POST\n/\n\nhost:example.amazonaws.com\nmy-header1:VALUE1\nx-amz-date:20150830T123600Z\n\nhost;my-header1;x-amz-date\n" + emptyHash,
          signature: "cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d"),
]

@Suite("SigV4 signing")
struct SigV4Tests {
    let signer = SigV4Signer(credentials: AWSCredentials(accessKeyId: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
                             region: "us-east-1", service: "service")

    @Test("AWS's test suite: canonical request, signature and Authorization header", arguments: suite)
    func awsSuite(_ c: SigV4SuiteCase) {
        let s = signer.sign(method: c.method, path: c.path, query: c.query, headers: c.headers, payloadHash: emptyHash, date: suiteDate)
        #expect(s.canonicalRequest == c.canonicalRequest)
        #expect(s.signature == c.signature)
        #expect(s.authorization == "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=\(s.signedHeaders), Signature=\(c.signature)")
    }

    // The examples of S3's "Signature calculations for the Authorization header: transferring
    // payload in a single chunk" (key AKIAIOSFODNN7EXAMPLE, 2013-05-24, bucket examplebucket).
    let s3 = SigV4Signer(credentials: AWSCredentials(accessKeyId: "AKIAIOSFODNN7EXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
                         region: "us-east-1")
    let day = Date(timeIntervalSince1970: 1_369_353_600)   // 2013-05-24T00:00:00Z
    let s3Host = ("Host", "examplebucket.s3.amazonaws.com")
    let s3Date = ("x-amz-date", "20130524T000000Z")

    @Test("S3's examples: GET an object's range, PUT an object, GET a bucket's lifecycle, list objects")
    func s3Examples() {
        let get = s3.sign(method: "GET", path: "/test.txt", query: [],
                          headers: [s3Host, ("Range", "bytes=0-9"), ("x-amz-content-sha256", emptyHash), s3Date], payloadHash: emptyHash, date: day)
        #expect(get.signature == "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
        #expect(get.stringToSign == "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972")

        let body = Data("Welcome to Amazon S3.".utf8)
        let bodyHash = SigV4Signer.sha256Hex(body)
        #expect(bodyHash == "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072")
        let put = s3.sign(method: "PUT", path: "/" + SigV4Signer.encode("test$file.text", keepSlash: true), query: [],
                          headers: [("Date", "Fri, 24 May 2013 00:00:00 GMT"), s3Host, ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
                                    ("x-amz-content-sha256", bodyHash), s3Date], payloadHash: bodyHash, date: day)
        #expect(put.canonicalRequest.hasPrefix("PUT\n/test%24file.text\n\n"))
        #expect(put.signature == "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd")

        let lifecycle = s3.sign(method: "GET", path: "/", query: [("lifecycle", "")],
                                headers: [s3Host, ("x-amz-content-sha256", emptyHash), s3Date], payloadHash: emptyHash, date: day)
        #expect(lifecycle.signature == "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543")

        let list = s3.sign(method: "GET", path: "/", query: [("max-keys", "2"), ("prefix", "J")],
                           headers: [s3Host, ("x-amz-content-sha256", emptyHash), s3Date], payloadHash: emptyHash, date: day)
        #expect(list.signature == "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7")
    }

    @Test("URI encoding: unreserved characters stay, everything else is %XX in UTF-8, a slash only outside keys")
    func encoding() {
        #expect(SigV4Signer.encode("a b+c/d~e") == "a%20b%2Bc%2Fd~e")
        #expect(SigV4Signer.encode("landing/día 1.csv", keepSlash: true) == "landing/d%C3%ADa%201.csv")
    }
}

@Suite("S3 connections, key patterns and XML")
struct S3PartsTests {
    @Test("connection URLs: s3:// with tls=false, http(s)://, AWS by region, secrets percent-encoded, keys from the environment")
    func connections() throws {
        let moto = try S3Connection(parsing: "s3://AKID:se%2Fcr%2Bet@127.0.0.1:5000/?region=eu-west-1&path_style=true&tls=false", name: "lake", environment: [:])
        #expect(moto.endpoint.absoluteString == "http://127.0.0.1:5000")
        #expect(moto.region == "eu-west-1" && moto.pathStyle)
        #expect(moto.credentials == AWSCredentials(accessKeyId: "AKID", secretAccessKey: "se/cr+et"))
        let minio = try S3Connection(parsing: "https://minio:minio123@minio.internal:9000", environment: [:])
        #expect(minio.endpoint.absoluteString == "https://minio.internal:9000" && minio.pathStyle && minio.region == "us-east-1")
        let aws = try S3Connection(parsing: "s3://@/?region=eu-south-2", environment: ["AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK", "AWS_SESSION_TOKEN": "T"])
        #expect(aws.endpoint.absoluteString == "https://s3.eu-south-2.amazonaws.com" && !aws.pathStyle)
        #expect(aws.credentials == AWSCredentials(accessKeyId: "AK", secretAccessKey: "SK", sessionToken: "T"))
        let tls = try S3Connection(parsing: "s3://a:b@store.example.com", environment: [:])
        #expect(tls.endpoint.absoluteString == "https://store.example.com")

        #expect(throws: S3Connection.Invalid.self) { try S3Connection(parsing: "postgresql://u:p@db/x", name: "lake", environment: [:]) }
        do {
            _ = try S3Connection(parsing: "s3://127.0.0.1:9000", name: "lake", environment: [:])
            Issue.record("a connection without keys was accepted")
        } catch {
            #expect("\(error)".contains("connection `lake`") && "\(error)".contains("no access key"))
        }
        #expect(throws: S3Connection.Invalid.self) { try S3Connection(parsing: "s3://a:b@h/?tls=maybe", environment: [:]) }

        // Request targets: path style, virtual-hosted style, an IPv6 endpoint; keys encoded once, slashes kept.
        let path = S3Client(moto).target(bucket: "example", key: "landing/día 1.csv", query: [("uploads", "")])
        #expect(path.url.absoluteString == "http://127.0.0.1:5000/example/landing/d%C3%ADa%201.csv?uploads" && path.host == "127.0.0.1:5000")
        #expect(path.path == "/example/landing/d%C3%ADa%201.csv")
        let virtual = S3Client(aws).target(bucket: "example", key: "a+b", query: [("list-type", "2"), ("prefix", "x y")])
        #expect(virtual.url.absoluteString == "https://example.s3.eu-south-2.amazonaws.com/a%2Bb?list-type=2&prefix=x%20y")
        let v6 = try S3Client(url: "s3://a:b@[::1]:9000/?tls=false")
        #expect(v6.target(bucket: "b", key: "k", query: []).url.absoluteString == "http://[::1]:9000/b/k")
    }

    @Test("key patterns: exact keys, prefixes, globs with * (one segment), ** (any), ?, sets; the listed prefix")
    func patterns() {
        let exact = S3KeyPattern("landing/numbers.csv")
        #expect(exact.kind == .exact && exact.matches("landing/numbers.csv") && !exact.matches("landing/numbers.csv.bak"))
        let prefix = S3KeyPattern("landing/")
        #expect(prefix.kind == .prefix && prefix.matches("landing/a/b.csv") && !prefix.matches("archive/landing/x"))
        let glob = S3KeyPattern("landing/2026-12-04/*.csv")
        #expect(glob.kind == .glob && glob.listPrefix == "landing/2026-12-04/")
        #expect(glob.matches("landing/2026-12-04/a.csv") && !glob.matches("landing/2026-12-04/sub/a.csv") && !glob.matches("landing/2026-12-04/a.json"))
        let deep = S3KeyPattern("raw/**/part-?.parquet")
        #expect(deep.matches("raw/2026/12/part-1.parquet") && deep.matches("raw//part-2.parquet") && !deep.matches("raw/2026/part-10.parquet"))
        let set = S3KeyPattern("in/[a-c]*.txt")
        #expect(set.matches("in/b1.txt") && !set.matches("in/d1.txt"))
        let negated = S3KeyPattern("in/[!a]*")
        #expect(negated.matches("in/b") && !negated.matches("in/a"))
        let escaped = S3KeyPattern("odd/\\*.txt")
        #expect(escaped.kind == .exact && escaped.matches("odd/*.txt") && !escaped.matches("odd/x.txt"))
        // No exponential backtracking.
        let evil = S3KeyPattern("*a*a*a*a*a*a*a*a*b")
        #expect(!evil.matches(String(repeating: "a", count: 2000)))
    }

    @Test("S3's XML: elements by name (not by prefix of a longer name), entities decoded")
    func xml() {
        let body = Substring("<ListBucketResult><KeyCount>2</KeyCount><Contents><Key>a&amp;b.csv</Key><ETag>&quot;abc&quot;</ETag></Contents>"
            + "<Contents><Key>c&#x20;d</Key><Size>5</Size></Contents><IsTruncated>false</IsTruncated><Empty/></ListBucketResult>")
        let contents = S3XML.elements("Contents", in: body)
        #expect(contents.count == 2)
        #expect(S3XML.value("Key", in: contents[0]) == "a&b.csv")
        #expect(S3XML.value("ETag", in: contents[0]) == "\"abc\"")
        #expect(S3XML.value("Key", in: contents[1]) == "c d")
        #expect(S3XML.value("KeyCount", in: body) == "2")
        #expect(S3XML.value("Empty", in: body) == "")
        #expect(S3XML.escape("<a & 'b'>") == "&lt;a &amp; &apos;b&apos;&gt;")
    }
}

@Suite("S3 event notifications")
struct S3NotificationTests {
    @Test("S3's Records (keys URL-encoded), MinIO's s3: names, EventBridge's Object Created, an SNS envelope; removals ignored, the test event empty")
    func shapes() throws {
        let s3 = try JSONValue.parse(#"{"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "eventTime": "2026-12-04T05:00:00.000Z", "s3": {"bucket": {"name": "example"}, "object": {"key": "landing/d%C3%ADa+1.csv", "size": 12, "eTag": "abc", "sequencer": "0A1"}}}, {"eventName": "ObjectRemoved:Delete", "s3": {"bucket": {"name": "example"}, "object": {"key": "x"}}}]}"#)
        let parsed = try S3Notification.parse(s3)
        #expect(parsed.ignored == 1 && parsed.records.count == 1)
        let r = try #require(parsed.records.first)
        #expect(r.key == "landing/día 1.csv" && r.uri == "s3://example/landing/día 1.csv" && r.size == 12 && r.etag == "abc")
        #expect(r.dedupeKey == "example/landing/día 1.csv#seq:0A1")
        #expect(r.extra["sequencer"] == "0A1" && r.extra["eventName"] == "ObjectCreated:Put")

        let minio = try S3Notification.parse(try JSONValue.parse(#"{"EventName": "s3:ObjectCreated:Put", "Key": "example/a.csv", "Records": [{"eventSource": "minio:s3", "eventName": "s3:ObjectCreated:Put", "s3": {"bucket": {"name": "example"}, "object": {"key": "a.csv", "size": 1, "eTag": "e", "sequencer": "17E"}}}]}"#))
        #expect(minio.records.first?.eventName == "ObjectCreated:Put")

        let bridge = try S3Notification.parse(try JSONValue.parse(#"{"id": "u-1", "detail-type": "Object Created", "source": "aws.s3", "time": "2026-12-04T05:00:00Z", "detail": {"bucket": {"name": "example"}, "object": {"key": "landing/día 1.csv", "size": 12, "etag": "abc", "sequencer": "0A1"}, "reason": "PutObject"}}"#))
        // The same write as the notification above: the same dedupe key, whichever way it came.
        #expect(bridge.records.first?.dedupeKey == r.dedupeKey && bridge.records.first?.key == "landing/día 1.csv")

        let sns = try S3Notification.parse(["Type": "Notification", "Message": .string(s3.compactJSON)])
        #expect(sns.records == parsed.records)
        #expect(try S3Notification.parse(try JSONValue.parse(#"{"Service": "Amazon S3", "Event": "s3:TestEvent"}"#)).records.isEmpty)
        #expect(try S3Notification.parse(try JSONValue.parse(#"{"detail-type": "Object Deleted", "source": "aws.s3", "detail": {}}"#)).ignored == 1)
    }

    @Test("malformed notifications are refused naming the field: not S3, missing key, NUL, an oversized key, an SNS confirmation")
    func refusals() throws {
        func message(_ json: String) -> String {
            do { _ = try S3Notification.parse(try JSONValue.parse(json)); return "accepted" } catch { return "\(error)" }
        }
        #expect(message(#"{"hello": 1}"#).contains("not an S3 event notification"))
        #expect(message(#"{"Records": {}}"#).contains("`Records` must be an array"))
        #expect(message(#"{"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}, "object": {}}}]}"#) == "Records[0]: `s3.object.key` is missing")
        #expect(message(#"{"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}, "object": {"key": "a\u0000b"}}}]}"#).contains("NUL"))
        let long = String(repeating: "k", count: 1025)
        #expect(message(#"{"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}, "object": {"key": "\#(long)"}}}]}"#).contains("longer than 1,024 bytes"))
        #expect(message(#"{"Type": "SubscriptionConfirmation", "SubscribeURL": "https://sns"}"#).contains("SubscribeURL"))
    }
}
