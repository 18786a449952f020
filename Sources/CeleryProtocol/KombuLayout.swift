import FlowKit
import Foundation
import RedisClient

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
    /// between the pop and the `unacked` write. Envelopes without a delivery tag go straight to
    /// the dead-letter list with the reason. Returns, per envelope claimed, the envelope and
    /// "1" when its task was cancelled before the claim (`flowkit:cancel:<id>` exists) else "0"
    /// — read with `claimed(_:)`; the worker needs no extra round trip to check.
    public static let claimScript = """
    local n = tonumber(ARGV[1])
    local now = tonumber(ARGV[2])
    local dead = ARGV[3]
    local nq = #KEYS - 2
    local unacked, idx = KEYS[nq + 1], KEYS[nq + 2]
    local out = {}
    for i = 1, nq do
      while #out < n do
        local m = redis.call('RPOP', KEYS[i])
        if not m then break end
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
        if type(tag) ~= 'string' or tag == '' then
          local why = 'no properties.delivery_tag'
          if not ok then why = 'not JSON' end
          redis.call('LPUSH', dead, cjson.encode({reason = why, queue = KEYS[i], at = now, message = m}))
        else
          redis.call('HSET', unacked, tag, '[' .. m .. ', ' .. cjson.encode(ex) .. ', ' .. cjson.encode(rk) .. ']')
          redis.call('ZADD', idx, now, tag)
          local cancelled = '0'
          if type(obj['headers']) == 'table' and type(obj['headers']['id']) == 'string'
             and redis.call('EXISTS', '\(FlowKitKeys.cancel(""))' .. obj['headers']['id']) == 1 then
            cancelled = '1'
          end
          table.insert(out, m)
          table.insert(out, cancelled)
        end
      end
    end
    return out
    """

    /// One message taken by `claimScript`.
    public struct Claimed: Sendable {
        public var raw: String
        /// Its run or task was cancelled before it was claimed.
        public var cancelled: Bool
    }

    /// The claim script's command: up to `count` messages from `queues`' lists.
    public static func claimCommand(queues: [String], count: Int, now: Double) -> [String] {
        let keys = queues.flatMap { lists(for: $0) } + [unacked, unackedIndex]
        return ["EVAL", claimScript, String(keys.count)] + keys + [String(count), String(now), FlowKitKeys.deadLetter]
    }

    /// The claim script's reply as messages.
    public static func claimed(_ reply: RedisValue) -> [Claimed] {
        let items = reply.array?.compactMap(\.string) ?? []
        return stride(from: 0, to: items.count - 1, by: 2).map { Claimed(raw: items[$0], cancelled: items[$0 + 1] == "1") }
    }

    /// Puts back on their queues the messages claimed before ARGV[1] (seconds since 1970) and
    /// never acknowledged — kombu's `restore_visible` — at most ARGV[2] of them. Returns how many.
    public static let restoreScript = """
    local cutoff = tonumber(ARGV[1])
    local limit = tonumber(ARGV[2])
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
          redis.call('RPUSH', list, msg)
          n = n + 1
        end
      end
    end
    return n
    """

    /// Whether a message (ARGV[1], the delivery tag) is waiting in a queue list (KEYS but the
    /// last two) or claimed in `unacked` (the last two KEYS). 1 when it is, 0 when it is gone.
    public static let locateScript = """
    local nq = #KEYS - 2
    if redis.call('HEXISTS', KEYS[nq + 1], ARGV[1]) == 1 then return 1 end
    for i = 1, nq do
      local items = redis.call('LRANGE', KEYS[i], 0, -1)
      for _, m in ipairs(items) do
        if string.find(m, ARGV[1], 1, true) then return 1 end
      end
    end
    if redis.call('HEXISTS', KEYS[nq + 1], ARGV[1]) == 1 then return 1 end
    return 0
    """

    /// The commands that acknowledge a claimed message.
    public static func ackCommands(deliveryTag: String) -> [[String]] {
        [["HDEL", unacked, deliveryTag], ["ZREM", unackedIndex, deliveryTag]]
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
    /// Set when a try must stop (its run was cancelled).
    public static func cancel(_ messageId: String) -> String { "flowkit:cancel:\(messageId)" }
}
