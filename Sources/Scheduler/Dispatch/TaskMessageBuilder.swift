public import CeleryProtocol
public import FlowKit
public import Foundation

/// The Celery messages of queued tries, as pure code: the store reads the run, the tries and
/// the upstream results, and this builds the envelopes.
public enum TaskMessageBuilder {
    /// What every message of one run carries.
    public struct Run: Sendable {
        public var runId: String
        public var flowId: String
        public var params: [String: JSONValue]
        public var logicalDate: Date
        public var dataIntervalStart: Date
        public var dataIntervalEnd: Date
        /// In a run started by assets: the events that started it.
        public var triggeringEvents: JSONValue?
        public init(runId: String, flowId: String, params: [String: JSONValue], logicalDate: Date, dataIntervalStart: Date, dataIntervalEnd: Date,
                    triggeringEvents: JSONValue? = nil) {
            self.runId = runId; self.flowId = flowId; self.params = params
            self.logicalDate = logicalDate; self.dataIntervalStart = dataIntervalStart; self.dataIntervalEnd = dataIntervalEnd
            self.triggeringEvents = triggeringEvents
        }
    }

    /// One queued try.
    public struct Try: Sendable {
        public var taskId: String
        public var tryNumber: Int
        public var messageId: String
        public var queue: String
        public var timeoutSeconds: Double?
        /// Set for an instance of a mapped task.
        public var mapIndex: Int?
        public var mapItem: JSONValue?
        public init(taskId: String, tryNumber: Int, messageId: String, queue: String, timeoutSeconds: Double?,
                    mapIndex: Int? = nil, mapItem: JSONValue? = nil) {
            self.taskId = taskId; self.tryNumber = tryNumber; self.messageId = messageId; self.queue = queue; self.timeoutSeconds = timeoutSeconds
            self.mapIndex = mapIndex; self.mapItem = mapItem
        }
    }

    /// Sealed values from the connections and variables store, by name (`fk1:…`, as stored):
    /// each message carries those its task needs, still sealed; the worker opens them.
    public struct Sealed: Sendable {
        public var connections: [String: String] = [:]
        public var variables: [String: String] = [:]
        public init(connections: [String: String] = [:], variables: [String: String] = [:]) {
            self.connections = connections; self.variables = variables
        }

        /// What the task's message carries (`{"connections": {…}, "variables": {…}}`), or nil.
        func carried(by def: FlowDefinition.TaskDefinition) -> JSONValue? {
            guard def.needsStore else { return nil }
            var c: [String: JSONValue] = [:], v: [String: JSONValue] = [:]
            for n in def.neededConnections { if let s = connections[n] { c[n] = .string(s) } }
            for n in def.neededVariables { if let s = variables[n] { v[n] = .string(s) } }
            if c.isEmpty && v.isEmpty { return nil }
            return ["connections": .object(c), "variables": .object(v)]
        }
    }

    /// The message of each try, in the order given. `results` holds the results of finished
    /// tasks of the run; each message carries those of its own upstream tasks only.
    ///
    /// An instance of a mapped task carries its element instead of the list it came from: the
    /// source task's result (or the source param) is left out of its message, so that 10,000
    /// instances do not each carry the 10,000-element list.
    public static func messages(run: Run, tries: [Try], graph: FlowGraph, results: [String: JSONValue],
                                externalRuns: [String: JSONValue] = [:], sealed: Sealed = .init()) -> [CeleryMessage] {
        tries.map { t in
            let def = graph.tasks[t.taskId]
            let source = t.mapIndex == nil ? nil : def?.mapOver
            var upstream: [String: JSONValue] = [:]
            for u in def?.upstream ?? [] where source != .result(of: u) { if let r = results[u] { upstream[u] = r } }
            var params = run.params
            if case .param(let name)? = source { params[name] = nil }
            var inv = FlowTaskInvocation(flowId: run.flowId, runId: run.runId, taskId: t.taskId, tryNumber: t.tryNumber,
                                         logicalDate: run.logicalDate, dataIntervalStart: run.dataIntervalStart,
                                         dataIntervalEnd: run.dataIntervalEnd, params: params, upstream: upstream,
                                         timeoutSeconds: t.timeoutSeconds, mapIndex: t.mapIndex,
                                         mapItem: t.mapIndex == nil ? nil : (t.mapItem ?? .null))
            inv.triggeringEvents = run.triggeringEvents
            inv.flowVersion = graph.version
            inv.flowHash = graph.hash
            if let def { inv.secrets = sealed.carried(by: def) }
            if let watched = def?.sensor?.externalFlow {
                inv.externalRun = externalRuns[watched] ?? ["flowId": .string(watched)]
            }
            if let celeryName = def?.celeryName {
                // A task for a Celery worker (e.g. Python): the run's params are its kwargs, the
                // FlowKit invocation rides in a header it can ignore.
                var kwargs = run.params
                if def?.celeryContext == true {
                    // Opted in: what a FlowKit task's context holds, in Airflow's names.
                    kwargs["flowkit_context"] = [
                        "run_id": .string(run.runId), "flow_id": .string(run.flowId), "task_id": .string(t.taskId),
                        "try_number": .int(t.tryNumber), "logical_date": .string(Instant.format(run.logicalDate)),
                        "data_interval_start": .string(Instant.format(run.dataIntervalStart)),
                        "data_interval_end": .string(Instant.format(run.dataIntervalEnd)),
                        "params": .object(run.params), "upstream": .object(upstream),
                    ]
                }
                var m = CeleryMessage(id: t.messageId, task: celeryName, args: [], kwargs: kwargs,
                                      queue: t.queue, retries: t.tryNumber - 1, timeLimit: (t.timeoutSeconds, nil), rootId: run.runId)
                m.extraHeaders = [FlowTaskInvocation.kwarg: inv.jsonValue, FlowKitKeys.runHeader: .string(run.runId)]
                return m
            }
            // Every FlowKit message goes to the queue's main list (kombu priority 0, consumed
            // first): a task's priority orders the tasks that become ready together, at dispatch.
            // kombu's priority lists run the other way (0 is the most urgent) and are polled
            // less eagerly, so mapping FlowKit priorities onto them would invert or delay them.
            var m = CeleryMessage(id: t.messageId, task: FlowTaskInvocation.taskName(flow: run.flowId, task: def?.id ?? t.taskId), args: [],
                                  kwargs: [FlowTaskInvocation.kwarg: inv.jsonValue], queue: t.queue,
                                  priority: 0, retries: t.tryNumber - 1, timeLimit: (t.timeoutSeconds, nil), rootId: run.runId)
            m.extraHeaders[FlowKitKeys.runHeader] = .string(run.runId)  // checked at the claim, before decoding
            return m
        }
    }
}
