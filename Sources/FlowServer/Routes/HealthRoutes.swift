import FlowKit
import Foundation
import Hummingbird
import HTTPTypes
import Prometheus
import Scheduler

/// `/health`, `/api/v1/health`, `/metrics` and the OpenAPI document: open to probes and scrapers.
struct HealthRoutes: APIResource {
    let api: FlowAPI

    func register(_ routes: APIRoutes) {
        routes.open(.get, "/health", why: "a probe for load balancers and orchestrators") { _, _ in await api.health() }
        routes.open(.get, "/api/v1/health", why: "a probe for load balancers and orchestrators") { _, _ in await api.health() }
        // Kubernetes' probes: live while the process answers, ready while it reaches PostgreSQL
        // and Redis (a stale scheduler does not make an API pod unready: the dashboard says so).
        routes.open(.get, "/health/live", why: "a liveness probe") { _, _ in
            (try? json(HealthReport(status: "ok", checks: [:]))) ?? Response(status: .ok)
        }
        routes.open(.get, "/health/ready", why: "a readiness probe") { _, _ in await api.readiness() }
        routes.open(.get, "/metrics", why: "Prometheus scrapes it (bind the API to a private address)") { _, _ in await api.metrics() }
        routes.open(.get, "/api/v1/openapi.json", why: "the API's own description") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: OpenAPIDocument.text)))
        }
    }
}

extension FlowAPI {
    func health() async -> Response {
        var checks: [String: String] = [:]
        var ok = true
        do { try await store.ping(); checks["postgres"] = "ok" } catch { ok = false; checks["postgres"] = "down: \(error)" }
        do { try await broker.ping(); checks["redis"] = "ok" } catch { ok = false; checks["redis"] = "down: \(error)" }
        if let age = try? await store.schedulerHeartbeatAge(now: self.config.clock.now()) {
            let fresh = age < 30
            if !fresh { ok = false }
            checks["scheduler"] = fresh ? "ok" : "stale: last heartbeat \(Int(age))s ago"
        } else {
            ok = false
            checks["scheduler"] = checks["postgres"] == "ok" ? "down: no scheduler has ever run" : "unknown"
        }
        var report = HealthReport(status: ok ? "ok" : "unavailable", checks: checks)
        // Queue depths for the dashboard: the queues workers consume, and the default one.
        if checks["redis"] == "ok", checks["postgres"] == "ok", let workers = try? await store.workers(now: self.config.clock.now()) {
            let queues = Array(Set(workers.flatMap(\.queues) + [defaultQueue])).sorted()
            if let depths = try? await broker.queueDepths(queues) {
                report.queues = Dictionary(uniqueKeysWithValues: queues.map { ($0, depths[$0] ?? 0) })
            }
        }
        // Flows that could not be registered do not make the system unhealthy, but they are said.
        if checks["postgres"] == "ok", let errors = try? await store.importErrors(), !errors.isEmpty {
            report.importErrors = errors.map { HealthReport.FlowError(flowId: $0.flowId, message: $0.message) }
        }
        // Notifications refused for their configuration (a missing connection or secret) do
        // not make the system unhealthy either, but no retry fixes them: they are said here.
        if checks["postgres"] == "ok", let problems = try? await store.configurationProblems(now: self.config.clock.now()), !problems.isEmpty {
            report.configurationProblems = problems.map { HealthReport.ConfigurationProblem(notifier: $0.notifier, message: $0.error, count: $0.count) }
        }
        return (try? json(report, status: ok ? .ok : .serviceUnavailable)) ?? errorJSON(APIError(.internalServerError, "internal", "health"))
    }

    func readiness() async -> Response {
        var checks: [String: String] = [:]
        do { try await store.ping(); checks["postgres"] = "ok" } catch { checks["postgres"] = "down: \(error)" }
        do { try await broker.ping(); checks["redis"] = "ok" } catch { checks["redis"] = "down: \(error)" }
        let ok = checks.values.allSatisfy { $0 == "ok" }
        return (try? json(HealthReport(status: ok ? "ok" : "unavailable", checks: checks), status: ok ? .ok : .serviceUnavailable))
            ?? errorJSON(APIError(.internalServerError, "internal", "health"))
    }

    func metrics() async -> Response {
        // Gauges read at each scrape; the registry keeps them between scrapes.
        if let counts = try? await store.stateCounts() {
            for st in RunState.allCases {
                gauge("runs", "Flow runs by state.", [("state", st.rawValue)])
                    .set(Double(counts.runs[st.rawValue] ?? 0))
            }
            for st in ["queued", "running", "up_for_retry", "up_for_reschedule"] {
                gauge("task_instances", "Unfinished task instances by state.", [("state", st)])
                    .set(Double(counts.tasks[st] ?? 0))
            }
        }
        if let workers = try? await store.workers(now: self.config.clock.now()) {
            let queues = Array(Set(workers.flatMap(\.queues) + [defaultQueue])).sorted()
            if let depths = try? await broker.queueDepths(queues) {
                for q in queues {
                    gauge("queue_depth", "Messages waiting in a queue.", [("queue", q)])
                        .set(Double(depths[q] ?? 0))
                }
            }
            gauge("workers_online", "Workers heard from in the last 30 seconds.")
                .set(Double(workers.filter { $0.state == "online" && $0.heartbeatAgeSeconds < 30 }.count))
        }
        return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                        body: .init(byteBuffer: ByteBuffer(string: registry.emitToString())))
    }
}
