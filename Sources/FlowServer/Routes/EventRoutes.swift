import FlowKit
import Foundation
import Hummingbird
import HTTPTypes
import Scheduler

/// The live stream of the schedulers' change notifications (server-sent events).
struct EventRoutes: APIResource {
    let api: FlowAPI

    func register(_ routes: APIRoutes) {
        routes.on(.get, "/api/v1/events/stream", role: .read) { req, _ in
            var seconds = 300.0
            if let v = req.uri.queryParameters.get("maxSeconds") {
                guard let n = Double(v), n >= 1, n <= 3600 else { throw APIError.badRequest("`maxSeconds` must be a number from 1 to 3600") }
                seconds = n
            }
            return api.eventStream(maxSeconds: seconds)
        }
    }
}

extension FlowAPI {
    /// Server-sent events: one `data: {"channel": …, "payload": …}` per change the schedulers
    /// announce, a comment every 15 s so that a dead client is noticed, and an end after
    /// `maxSeconds` (clients reconnect).
    func eventStream(maxSeconds: Double) -> Response {
        let feed = self.feed
        let (id, changes) = feed.subscribe()
        let body = ResponseBody { writer in
            defer { feed.unsubscribe(id) }
            // "connected" once the feed listens: every change committed after it reaches this client.
            let listening = await feed.waitUntilListening()
            try await writer.write(ByteBuffer(string: "retry: 1000\n: connected\(listening ? "" : " (the database is not answering; changes will follow when it does)")\n\n"))
            // Durations, not times of day: on the monotonic clock.
            let end = ContinuousClock.now.advanced(by: .milliseconds(Int64(maxSeconds * 1000)))
            // A ticker joins the changes, so that the loop wakes for keep-alives and the end.
            let ticker = Task {
                while !Task.isCancelled && ContinuousClock.now < end {
                    let left = ContinuousClock.now.duration(to: end)
                    try? await Task.sleep(for: min(.seconds(15), max(.milliseconds(50), left)))
                    feed.poke(id)
                }
                feed.unsubscribe(id)
            }
            defer { ticker.cancel() }
            for await change in changes {
                if change.channel == ChangeFeed.keepAlive {
                    try await writer.write(ByteBuffer(string: ": keep-alive\n\n"))
                } else {
                    let data = JSONValue.object(["channel": .string(change.channel), "payload": .string(change.payload)]).compactJSON
                    try await writer.write(ByteBuffer(string: "data: \(data)\n\n"))
                }
                if ContinuousClock.now >= end { break }
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache",
                                               HTTPField.Name("X-Accel-Buffering")!: "no"], body: body)
    }
}
