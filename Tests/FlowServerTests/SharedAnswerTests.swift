import Foundation
import Synchronization
import Testing
@testable import FlowServer

@Suite("Shared answers (the home page's overview)")
struct SharedAnswerTests {
    struct Boom: Error {}

    @Test("concurrent callers share one computation; an answer older than maxAge is asked again; an error is not kept")
    func sharing() async throws {
        let made = Atomic<Int>(0)
        let answer = SharedAnswer<Int>(maxAge: 2)
        let gate = AsyncStream<Void>.makeStream()
        let make: @Sendable () async throws -> Int = {
            let n = made.add(1, ordering: .relaxed).newValue
            if n == 1 { for await _ in gate.stream { break } }   // the first computation waits for the callers
            return n
        }
        try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<20 { group.addTask { try await answer.get(make) } }
            try await Task.sleep(for: .milliseconds(50))
            gate.continuation.yield()
            var got: [Int] = []
            for try await v in group { got.append(v) }
            #expect(got == Array(repeating: 1, count: 20))
        }
        #expect(made.load(ordering: .relaxed) == 1)
        #expect(try await answer.get(make) == 1)   // still young
        try await Task.sleep(for: .milliseconds(2100))
        #expect(try await answer.get(make) == 2)   // older than maxAge: asked again
        let failing = SharedAnswer<Int>(maxAge: 60)
        let tries = Atomic<Int>(0)
        await #expect(throws: Boom.self) { try await failing.get { tries.add(1, ordering: .relaxed); throw Boom() } }
        #expect(try await failing.get { tries.add(1, ordering: .relaxed); return 7 } == 7)
        #expect(tries.load(ordering: .relaxed) == 2)
    }
}
