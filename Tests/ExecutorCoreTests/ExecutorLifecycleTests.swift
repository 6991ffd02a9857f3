import ExecutorCore
import Testing

@Suite struct ExecutorLifecycleTests {
    /// A lifecycle that has started and runs.
    func running() throws -> ExecutorLifecycle {
        var l = ExecutorLifecycle()
        try l.start()
        for phase in ExecutorLifecycle.Phase.allCases.dropFirst() { try l.enter(phase) }
        try l.started()
        return l
    }

    @Test("start-up goes through the phases forward only, then runs with the loop on")
    func startUp() throws {
        var l = ExecutorLifecycle()
        #expect(l.state == .created)
        try l.start()
        #expect(l.state == .starting(.launching))
        try l.enter(.loading)
        #expect(throws: LifecycleError.illegal("enter initializing", .starting(.loading))) { try l.enter(.initializing) }
        #expect(throws: LifecycleError.self) { try l.enter(.loading) }
        #expect(throws: LifecycleError.self) { try l.start() }
        try l.started()
        #expect(l.state == .running(.looping) && l.isLooping)
        #expect(throws: LifecycleError.self) { try l.started() }
        #expect(throws: LifecycleError.self) { try l.enter(.initializingCache) }
    }

    @Test("steps take numbers only when sent and come back oldest first with their virtual engine")
    func steps() throws {
        var l = try running()
        #expect(try l.submit(virtualEngine: 0) == .send(step: 0))
        #expect(try l.submit(virtualEngine: 0) == .send(step: 0))  // asking twice sends nothing
        l.sent(virtualEngine: 0)
        #expect(try l.submit(virtualEngine: 1) == .send(step: 1))
        l.sent(virtualEngine: 1)
        #expect(l.inFlight.map(\.step) == [0, 1])
        #expect(try l.receive() == .init(step: 0, virtualEngine: 0))
        #expect(try l.receive() == .init(step: 1, virtualEngine: 1))
        #expect(throws: LifecycleError.nothingInFlight) { try l.receive() }
    }

    @Test("the loop pauses between steps only; the next step resumes it; pausing twice does nothing")
    func loop() throws {
        var l = try running()
        l.sent(virtualEngine: 0)
        #expect(throws: LifecycleError.stepsInFlight(1)) { try l.pause() }
        _ = try l.receive()
        #expect(try l.pause() == .stopLoop)
        #expect(l.state == .running(.paused) && !l.isLooping)
        #expect(try l.pause() == ExecutorLifecycle.PauseAction.none)
        #expect(try l.submit(virtualEngine: 0) == .resumeLoopThenSend(step: 1))
        l.sent(virtualEngine: 0)
        #expect(l.isLooping)
    }

    @Test("a failure keeps the first reason and rank, drops steps in flight, and fails every later call")
    func failure() throws {
        var l = try running()
        l.sent(virtualEngine: 0)
        #expect(l.fail(rank: 2, reason: "rank 2 died") == .shutDownWorkers)
        #expect(l.fail(rank: 1, reason: "later") == ExecutorLifecycle.StopAction.none)
        #expect(l.state == .failed(rank: 2, reason: "rank 2 died") && l.inFlight.isEmpty)
        #expect(throws: LifecycleError.failed(rank: 2, reason: "rank 2 died")) { try l.submit(virtualEngine: 0) }
        #expect(throws: LifecycleError.failed(rank: 2, reason: "rank 2 died")) { try l.receive() }
        #expect(throws: LifecycleError.failed(rank: 2, reason: "rank 2 died")) { try l.pause() }
        // The workers were stopped by the failure: shutdown has nothing left to stop.
        #expect(l.shutdown() == ExecutorLifecycle.StopAction.none)
        #expect(l.state == .shutDown)
    }

    @Test("shutdown stops workers once from any state, and nothing runs afterwards")
    func shutdown() throws {
        var fresh = ExecutorLifecycle()
        #expect(fresh.shutdown() == ExecutorLifecycle.StopAction.none)
        var starting = ExecutorLifecycle()
        try starting.start()
        #expect(starting.shutdown() == .shutDownWorkers)
        var l = try running()
        #expect(l.shutdown() == .shutDownWorkers)
        #expect(l.shutdown() == ExecutorLifecycle.StopAction.none)
        #expect(throws: LifecycleError.illegal("submit a step", .shutDown)) { try l.submit(virtualEngine: 0) }
        #expect(throws: LifecycleError.self) { try l.start() }
        #expect(l.fail(rank: nil, reason: "late") == ExecutorLifecycle.StopAction.none && l.state == .shutDown)
    }

    @Test("the step deadline follows measured steps, per step and per token, unless fixed")
    func deadline() {
        var d = StepDeadline(floor: 1, multiplier: 10, initial: 10)
        #expect(d.seconds(tokens: 1) == 10)
        for _ in 0..<100 { d.record(seconds: 0.005, tokens: 1) }
        #expect(d.seconds(tokens: 1) == 1)  // 10 × 5 ms is under the floor
        for _ in 0..<20 { d.record(seconds: 0.5, tokens: 1) }
        #expect(d.seconds(tokens: 1) == 5)  // the p99 is now 0.5 s
        // A 512-token prefill, after steps of up to 0.5 s per token, gets 10 × 0.5 s × 512.
        #expect(d.seconds(tokens: 512) == 2560)
        #expect(d.explanation(tokens: 1).contains("p99"))
        let fixed = StepDeadline(fixed: 3)
        #expect(fixed.seconds(tokens: 1000) == 3 && fixed.explanation(tokens: 1) == "--step-timeout")
    }
}
