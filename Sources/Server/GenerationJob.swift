import Engine
import Executor
import ExecutorCore
import ServingAPI
import Synchronization

/// One HTTP request's completions (every prompt × `n` choices) running in the engine,
/// with their output as one stream of events, in the order the engine produced them.
///
/// Choice `i` is prompt `i / n`, sample `i % n`. Each choice is an engine request of its
/// own, so they batch with every other client's. `abort()` ends them all (a client that
/// went away), and their KV blocks return.
final class GenerationJob: Sendable {
    enum Event: Sendable {
        case delta(choice: Int, Engine.Delta)
        case done(choice: Int, Result<GenerationResult, GenerationError>)
    }

    let events: AsyncStream<Event>
    let ids: [UInt64]
    private let engine: Engine

    /// Submits every choice. A refused submission (queue full, draining, failed engine)
    /// aborts those already submitted and throws.
    init(engine: Engine, request: ResolvedRequest, prompts: [[Int32]]) async throws(GenerationError) {
        let (events, continuation) = AsyncStream<Event>.makeStream()
        var ids: [UInt64] = []
        do {
            for (p, tokens) in prompts.enumerated() {
                for sample in 0..<request.n {
                    let choice = p * request.n + sample
                    ids.append(try await engine.submit(.init(promptTokens: tokens, parameters: request.parameters(choice: sample)) { delta in
                        continuation.yield(.delta(choice: choice, delta))
                    }))
                }
            }
        } catch {
            // Abort what was admitted, and take the results so the engine forgets them.
            for id in ids {
                await engine.abort(id)
                _ = try? await engine.result(of: id)
            }
            continuation.finish()
            throw error
        }
        // One waiter per choice; the stream ends when every choice is done.
        let remaining = Remaining(ids.count)
        for (choice, id) in ids.enumerated() {
            Task {
                let result: Result<GenerationResult, GenerationError>
                do { result = .success(try await engine.result(of: id)) } catch {
                    result = .failure(error as? GenerationError ?? GenerationError("\(error)", kind: .engineFailed))
                }
                continuation.yield(.done(choice: choice, result))
                if remaining.decrement() == 0 { continuation.finish() }
            }
        }
        self.events = events
        self.ids = ids
        self.engine = engine
    }

    /// Ends every choice (finish reason `abort`) as soon as the engine's actor takes it: their
    /// KV blocks return then.
    func abort() {
        let engine = engine, ids = ids
        Task { for id in ids { await engine.abort(id) } }
    }

    /// Waits for every choice; results by choice.
    func results() async -> [Result<GenerationResult, GenerationError>] {
        var results = [Result<GenerationResult, GenerationError>?](repeating: nil, count: ids.count)
        for await event in events {
            if case let .done(choice, result) = event { results[choice] = result }
        }
        return results.map { $0 ?? .failure(GenerationError("the request ended without a result", kind: .engineFailed)) }
    }
}

/// Choices not yet done, counted down by their waiting tasks.
final class Remaining: Sendable {
    private let value: Mutex<Int>
    init(_ value: Int) { self.value = Mutex(value) }
    func decrement() -> Int { value.withLock { $0 -= 1; return $0 } }
}
