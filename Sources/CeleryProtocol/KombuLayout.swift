public import FlowJSON
import Foundation
public import RedisClient

/// Redis keys and atomic scripts of kombu's Redis transport, plus FlowKit's own keys.
///
/// One list per queue (`LPUSH` in, pop from the right), priority lists `<queue>\x06\x16<n>`,
/// `_kombu.binding.<queue>` sets, and late acks through the `unacked` hash (delivery tag →
/// `[message, exchange, routing_key]`) and the `unacked_index` sorted set (tag → claim time).
public enum KombuLayout {
    public static let unacked = "unacked"
    public static let unackedIndex = "unacked_index"
    public static let prioritySeparator = "\u{06}\u{16}"
    /// kombu's default priority steps; 0 is consumed first.
    public static let prioritySteps = [0, 3, 6, 9]

    /// The lists of `queue`, highest priority first.
    public static func lists(for queue: String) -> [String] {
        prioritySteps.map { $0 == 0 ? queue : "\(queue)\(prioritySeparator)\($0)" }
    }

    /// The list a message of `priority` goes to (kombu rounds to the nearest step).
    public static func list(for queue: String, priority: Int) -> String {
        let step = prioritySteps.min { abs($0 - priority) < abs($1 - priority) } ?? 0
        return step == 0 ? queue : "\(queue)\(prioritySeparator)\(step)"
    }

    public static func bindingKey(_ queue: String) -> String { "_kombu.binding.\(queue)" }
    public static func bindingMember(_ queue: String) -> String { "\(queue)\(prioritySeparator)\(prioritySeparator)\(queue)" }

    /// The commands that enqueue `message` (the binding is idempotent).
    public static func enqueueCommands(_ message: CeleryMessage) -> [[String]] {
        [["SADD", bindingKey(message.queue), bindingMember(message.queue)],
         ["LPUSH", list(for: message.queue, priority: message.priority), message.encoded()]]
    }

    /// Pops up to ARGV[1] messages from the lists in KEYS (all but the last two, in order) and
    /// records each in `unacked`/`unacked_index` in the same step, closing kombu's window
    /// between the pop and the `unacked` write.
    ///
    /// Refused before any worker decodes them, onto the dead-letter list with the reason (capped
    /// in length, each copy cut to a bounded size): envelopes over the size limit (checked before
    /// decoding), envelopes that are not JSON or have no delivery tag, and FlowKit messages for a
    /// run no scheduler of this Redis dispatched (`headers.flowkit_run` names a run whose
    /// `flowkit:run:<id>` key is absent: a stale or forged message; if the run is real, the
    /// scheduler's lost-message check sends it again with the key).
    ///
    /// Returns `{claimed, rejected}`: per envelope claimed, the envelope and "1" when its task
    /// was cancelled before the claim (`flowkit:cancel:<id>` exists) else "0"; and the reasons of
    /// those refused, for the worker's log. Read with `claimed(_:)`.
    public static let claimScript = """
    local n = tonumber(ARGV[1])
    local now = tonumber(ARGV[2])
    local dead = ARGV[3]
    local maxBytes = tonumber(ARGV[4])
    local maxDead = tonumber(ARGV[5])
    local maxEntry = tonumber(ARGV[6])
    local runPrefix = ARGV[7]
    local claimKey = ARGV[8] or ''
    local tags = {}
    local nq = #KEYS - 2
    local unacked, idx = KEYS[nq + 1], KEYS[nq + 2]
    local out, rejected = {}, {}
    local function bury(entry, payload)
      if #payload > maxEntry then
        local cut = maxEntry
        while cut > 0 and (string.byte(payload, cut + 1) or 0) >= 128 and (string.byte(payload, cut + 1) or 0) < 192 do cut = cut - 1 end
        entry['truncated'] = true
        entry['size'] = #payload
        payload = string.sub(payload, 1, cut)
      end
      entry['message'] = payload
      redis.call('LPUSH', dead, cjson.encode(entry))
      redis.call('LTRIM', dead, 0, maxDead - 1)
      table.insert(rejected, entry['reason'])
    end
    for i = 1, nq do
      while #out < 2 * n do
        local m = redis.call('RPOP', KEYS[i])
        if not m then break end
        if #m > maxBytes then
          bury({reason = 'a message of ' .. #m .. ' bytes on `' .. KEYS[i] .. '` is over the limit of ' .. maxBytes .. ' bytes', queue = KEYS[i], at = now}, m)
        else
          local ok, obj = pcall(cjson.decode, m)
          local tag, ex, rk = nil, '', KEYS[i]
          if ok and type(obj) == 'table' and type(obj['properties']) == 'table' then
            tag = obj['properties']['delivery_tag']
            local info = obj['properties']['delivery_info']
            if type(info) == 'table' then
              if type(info['exchange']) == 'string' then ex = info['exchange'] end
              if type(info['routing_key']) == 'string' then rk = info['routing_key'] end
            end
          end
          local headers = nil
          if ok and type(obj) == 'table' and type(obj['headers']) == 'table' then headers = obj['headers'] end
          local run = nil
          if headers and type(headers['\(FlowKitKeys.runHeader)']) == 'string' then run = headers['\(FlowKitKeys.runHeader)'] end
          if type(tag) ~= 'string' or tag == '' then
            local why = 'a message on `' .. KEYS[i] .. '` has no properties.delivery_tag'
            if not ok then why = 'a message on `' .. KEYS[i] .. '` is not JSON' end
            bury({reason = why, queue = KEYS[i], at = now}, m)
          elseif run and redis.call('EXISTS', runPrefix .. run) == 0 then
            local task = '?'
            if type(headers['task']) == 'string' then task = headers['task'] end
            bury({reason = 'task `' .. task .. '` of unknown run `' .. run .. '`: no scheduler of this Redis dispatched it', queue = KEYS[i], at = now}, m)
          else
            redis.call('HSET', unacked, tag, '[' .. m .. ', ' .. cjson.encode(ex) .. ', ' .. cjson.encode(rk) .. ']')
            redis.call('ZADD', idx, now, tag)
            local cancelled = '0'
            if headers and type(headers['id']) == 'string'
               and redis.call('EXISTS', '\(FlowKitKeys.cancel(""))' .. headers['id']) == 1 then
              cancelled = '1'
            end
            table.insert(out, m)
            table.insert(out, cancelled)
            table.insert(tags, tag .. ' ' .. ARGV[2])
          end
        end
      end
    end
    if claimKey ~= '' and #tags > 0 then redis.call('SET', claimKey, table.concat(tags, '\\n'), 'EX', 60) end
    return {out, rejected}
    """

    /// One message taken by `claimScript`.
    public struct Claimed: Sendable {
        public var raw: String
        /// Its run or task was cancelled before it was claimed.
        public var cancelled: Bool
    }

    /// What one claim took, and why it refused what it refused.
    public struct ClaimReply: Sendable {
        public var messages: [Claimed]
        public var rejected: [String]
        public init(messages: [Claimed] = [], rejected: [String] = []) { self.messages = messages; self.rejected = rejected }
    }

    /// Messages larger than this are refused before decoding (a 28 MB message left a worker at
    /// 4 times its size). Task messages carry the run's params and the upstream results.
    public static let defaultMaxMessageBytes = 8 << 20

    /// The claim script's command: up to `count` messages from `queues`' lists. With a
    /// `claimKey`, the script also records the delivery tags it claimed there for 60 s, so that a
    /// worker whose connection dropped before the reply arrived can take them back
    /// (`recoverCommand`) instead of leaving them to the visibility timeout.
    public static func claimCommand(queues: [String], count: Int, now: Double, maxMessageBytes: Int = defaultMaxMessageBytes,
                                    claimKey: String = "") -> [String] {
        let keys = queues.flatMap { lists(for: $0) } + [unacked, unackedIndex]
        return ["EVAL", claimScript, String(keys.count)] + keys
            + [String(count), String(now), FlowKitKeys.deadLetter, String(maxMessageBytes), String(DeadLetter.maxEntries),
               String(DeadLetter.maxPayloadBytes), FlowKitKeys.run(""), claimKey]
    }

    /// The messages a claim recorded under ARGV[1] that are still claimed by that claim (in
    /// KEYS[1], `unacked`, with the claim's own time in KEYS[2], `unacked_index` — a message the
    /// visibility timeout restored and another worker claimed has another time), as their
    /// `unacked` payloads; forgets the record. Empty when the claim never ran.
    public static let recoverScript = """
    local v = redis.call('GET', ARGV[1])
    if not v then return {} end
    redis.call('DEL', ARGV[1])
    local out = {}
    for line in string.gmatch(v, '[^\\n]+') do
      local tag, at = string.match(line, '^(.*) ([^ ]+)$')
      local score = tag and redis.call('ZSCORE', KEYS[2], tag)
      if score and tonumber(score) == tonumber(at) then
        local p = redis.call('HGET', KEYS[1], tag)
        if p then table.insert(out, p) end
      end
    end
    return out
    """

    /// The command that takes back what the claim recorded under `claimKey`.
    public static func recoverCommand(claimKey: String) -> [String] {
        ["EVAL", recoverScript, "2", unacked, unackedIndex, claimKey]
    }

    /// The envelopes in `recoverScript`'s reply (each `unacked` payload is `[message, exchange, routing_key]`).
    public static func recovered(_ reply: RedisValue) -> [Claimed] {
        (reply.array ?? []).compactMap(\.string).compactMap { payload in
            guard let message = (try? JSONValue.parse(payload))?.arrayValue?.first, message.objectValue != nil else { return nil }
            return Claimed(raw: message.compactJSON, cancelled: false)
        }
    }

    /// The claim script's reply.
    public static func claimed(_ reply: RedisValue) -> ClaimReply {
        let parts = reply.array ?? []
        let items = parts.first?.array?.compactMap(\.string) ?? []
        let messages = stride(from: 0, to: items.count - 1, by: 2).map { Claimed(raw: items[$0], cancelled: items[$0 + 1] == "1") }
        return ClaimReply(messages: messages, rejected: parts.dropFirst().first?.array?.compactMap(\.string) ?? [])
    }

    /// Puts back on their queues the messages claimed before ARGV[1] (seconds since 1970) and
    /// never acknowledged — kombu's `restore_visible` — at most ARGV[2] of them. Returns how many.
    /// They go to the consuming end (taken next), or with ARGV[3] = `back` behind every message
    /// waiting (a hand-back: what others can run goes first).
    public static let restoreScript = """
    local cutoff = tonumber(ARGV[1])
    local limit = tonumber(ARGV[2])
    local push = 'RPUSH'
    if ARGV[3] == 'back' then push = 'LPUSH' end
    local unacked, idx = KEYS[1], KEYS[2]
    local tags = redis.call('ZRANGEBYSCORE', idx, '-inf', cutoff, 'LIMIT', 0, limit)
    local n = 0
    for _, tag in ipairs(tags) do
      local payload = redis.call('HGET', unacked, tag)
      redis.call('ZREM', idx, tag)
      redis.call('HDEL', unacked, tag)
      if payload then
        local ok, obj = pcall(cjson.decode, payload)
        if ok and type(obj) == 'table' and obj[3] then
          local ex, rk = obj[2] or '', obj[3]
          local suffix = ', ' .. cjson.encode(ex) .. ', ' .. cjson.encode(rk) .. ']'
          local msg
          if string.sub(payload, -#suffix) == suffix then
            msg = string.sub(payload, 2, #payload - #suffix)
          else
            msg = cjson.encode(obj[1])
          end
          local pri = 0
          if type(obj[1]) == 'table' and type(obj[1]['properties']) == 'table' then
            pri = tonumber(obj[1]['properties']['priority']) or 0
          end
          local list = rk
          if pri >= 8 then list = rk .. '\\6\\22' .. '9' elseif pri >= 5 then list = rk .. '\\6\\22' .. '6'
          elseif pri >= 2 then list = rk .. '\\6\\22' .. '3' end
          redis.call(push, list, msg)
          n = n + 1
        end
      end
    end
    return n
    """

    /// Whether a message (ARGV[1], the delivery tag) is waiting in a queue list (KEYS but the
    /// last two) or claimed in `unacked` (the last two KEYS). 1 when it is, 0 when it is gone.
    /// With ARGV[2] `lists`, only a queue list counts: 1 when the message waits for a worker.
    public static let locateScript = """
    local nq = #KEYS - 2
    local claimed = ARGV[2] ~= 'lists'
    if claimed and redis.call('HEXISTS', KEYS[nq + 1], ARGV[1]) == 1 then return 1 end
    for i = 1, nq do
      local items = redis.call('LRANGE', KEYS[i], 0, -1)
      for _, m in ipairs(items) do
        if string.find(m, ARGV[1], 1, true) then return 1 end
      end
    end
    if claimed and redis.call('HEXISTS', KEYS[nq + 1], ARGV[1]) == 1 then return 1 end
    return 0
    """

    /// Which of the stream entries ARGV names (`events` ids) KEYS[1] lacks: their 1-based
    /// positions. After a Redis failover, a report whose entry the new master lacks was lost with
    /// the old one — its events, result and acknowledgement were written in one MULTI, which a
    /// replica receives whole or not at all.
    public static let missingEntriesScript = """
    local missing = {}
    for i = 1, #ARGV do
      if #redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i], 'COUNT', 1) == 0 then table.insert(missing, i) end
    end
    return missing
    """

    public static func missingEntriesCommand(stream: String, ids: [String]) -> [String] {
        ["EVAL", missingEntriesScript, "1", stream] + ids
    }

    /// The commands that acknowledge a claimed message.
    public static func ackCommands(deliveryTag: String) -> [[String]] {
        [["HDEL", unacked, deliveryTag], ["ZREM", unackedIndex, deliveryTag]]
    }

    /// Waits up to `timeout` seconds for a message on `queue` without taking it: a BLMOVE of the
    /// list onto itself, left to left, leaves the list as it was and hands over the element.
    public static func waitCommand(queue: String, timeout: Double) -> [String] {
        ["BLMOVE", queue, queue, "LEFT", "LEFT", String(format: "%.2f", timeout)]
    }

    /// Moves the claims of `tags` to `now` (seconds since 1970), so that no restore takes them
    /// back while their worker lives; `XX` leaves alone a claim that is gone (acknowledged).
    public static func refreshClaimCommands(tags: [String], now: Double) -> [[String]] {
        let at = String(now)
        return tags.map { ["ZADD", unackedIndex, "XX", at, $0] }
    }

    /// `restoreScript` for the claims made before `cutoff`, at most `limit` of them.
    public static func restoreCommand(claimedBefore cutoff: Double, limit: Int, behindWaiting: Bool = false) -> [String] {
        ["EVAL", restoreScript, "2", unacked, unackedIndex, String(cutoff), String(limit)] + (behindWaiting ? ["back"] : [])
    }

    /// Puts claimed messages back on their queues at once: their claims are scored 0, and the
    /// restore moves every claim older than 1 back — next in line, or `behindWaiting` every
    /// message waiting.
    public static func giveBackCommands(tags: [String], behindWaiting: Bool) -> [[String]] {
        tags.map { ["ZADD", unackedIndex, "XX", "0", $0] }
            + [["EVAL", restoreScript, "2", unacked, unackedIndex, "1", String(tags.count + 100)] + (behindWaiting ? ["back"] : [])]
    }
}

/// FlowKit's own Redis keys beside kombu's.
public enum FlowKitKeys {
    /// Worker → scheduler events (a stream read by the `schedulers` consumer group).
    public static let events = "flowkit:events"
    public static let eventsGroup = "flowkit-schedulers"
    /// Messages no worker could run, with the reason.
    public static let deadLetter = "flowkit:dead"
    public static let workers = "flowkit:workers"
    public static func workerAlive(_ name: String) -> String { "flowkit:worker:\(name):alive" }
    /// What one claim took, kept for 60 s in case its reply is lost (`KombuLayout.recoverCommand`).
    public static func claim(_ id: String) -> String { "flowkit:claim:\(id)" }
    /// Set when a try must stop (its run was cancelled).
    public static func cancel(_ messageId: String) -> String { "flowkit:cancel:\(messageId)" }
    /// How many times workers without its flow version handed a message back.
    public static func handBacks(_ messageId: String) -> String { "flowkit:handback:\(messageId)" }
    /// Set by the scheduler for a run whose messages it sends (refreshed at each dispatch): a
    /// message naming a run without it is refused at the claim.
    public static func run(_ runId: String) -> String { "flowkit:run:\(runId)" }
    /// A task's result as its worker reported it (JSON; `null` for none), for tasks further
    /// downstream that read it lazily (`TaskContext.result(of:)`); it lives `runKeySeconds`.
    public static func result(_ runId: String, _ taskId: String) -> String { "flowkit:result:\(runId):\(taskId)" }
    /// How long `run(_:)` lives after the run's last dispatch.
    public static let runKeySeconds = 2 * 86400
    /// The message header that names a FlowKit message's run.
    public static let runHeader = "flowkit_run"

    /// Counts one more hand-back of a message (the reply's first element is the count).
    public static func handBackCountCommands(_ messageId: String) -> [[String]] {
        [["INCR", handBacks(messageId)], ["EXPIRE", handBacks(messageId), "86400"]]
    }
    /// A worker's liveness: its key, which lives `ttl` seconds, and its entry in `workers`.
    public static func aliveCommands(worker: String, ttl: Int, info: String) -> [[String]] {
        [["SET", workerAlive(worker), "1", "EX", String(max(1, ttl))], ["HSET", workers, worker, info]]
    }
    /// 1 when the try of `messageId` must stop.
    public static func cancelCheckCommand(_ messageId: String) -> [String] { ["EXISTS", cancel(messageId)] }
    /// 1 when a scheduler of this Redis dispatched the run.
    public static func runExistsCommand(_ runId: String) -> [String] { ["EXISTS", run(runId)] }
    /// Reads a result kept by `storeResultCommand` (its key is `result(runId, taskId)`).
    public static func readResultCommand(_ key: String) -> [String] { ["GET", key] }
    /// Keeps a task's result (JSON) for the tasks downstream that read it lazily.
    public static func storeResultCommand(runId: String, taskId: String, json: String) -> [String] {
        ["SET", result(runId, taskId), json, "EX", String(runKeySeconds)]
    }
}

/// The dead-letter list (`flowkit:dead`): what no worker or scheduler could use, newest first,
/// each entry a JSON object with its `reason`. Capped in length, and each copy of a payload is
/// cut to a bounded size (`truncated`, with the original `size`), so that poison cannot fill Redis.
public enum DeadLetter {
    public static let maxEntries = 10_000
    public static let maxPayloadBytes = 64 * 1024

    /// The commands that push one entry (`fields` plus `payloadKey`: the payload, cut if need be)
    /// and trim the list.
    public static func commands(_ fields: [String: JSONValue], payloadKey: String, payload: String) -> [[String]] {
        var entry = fields
        let bytes = payload.utf8
        if bytes.count > maxPayloadBytes {
            var cut = maxPayloadBytes
            let u = Array(bytes.prefix(maxPayloadBytes + 1))
            while cut > 0 && u[cut] & 0xC0 == 0x80 { cut -= 1 }  // not inside a UTF-8 sequence
            entry[payloadKey] = .string(String(decoding: u[0..<cut], as: UTF8.self))
            entry["truncated"] = true
            entry["size"] = .int(bytes.count)
        } else {
            entry[payloadKey] = .string(payload)
        }
        return [["LPUSH", FlowKitKeys.deadLetter, JSONValue.object(entry).compactJSON],
                ["LTRIM", FlowKitKeys.deadLetter, "0", String(maxEntries - 1)]]
    }
}
