import FlowKit
import Foundation
import Hummingbird
import HTTPTypes
import Scheduler

/// Schedulers and workers, as their heartbeats show them.
struct WorkerRoutes: APIResource {
    let api: FlowAPI

    func register(_ routes: APIRoutes) {
        routes.on(.get, "/api/v1/schedulers", role: .read) { _, _ in
            let r = try await api.store.schedulers(now: api.config.clock.now())
            return try json(SchedulerList(schedulers: r.schedulers, leaderHeld: r.leaderHeld))
        }
        routes.on(.get, "/api/v1/workers", role: .read) { _, _ in
            try json(WorkerList(workers: try await api.store.workers(now: api.config.clock.now())))
        }
    }
}
