import Executor
import ExecutorCore
import Foundation
import Launchers
import Metrics
import Synchronization
import MetricsTestKit
import Transports
import WorkerRuntime
import ExecutorTestSupport
import Testing

/// Real worker processes (`cohort worker`), started from the built binary next to the tests.
@Suite(.serialized) struct WorkerGroupTests {
    /// One test backend for the whole process (swift-metrics bootstraps once).
    static let metrics: TestMetrics = {
        let m = TestMetrics()
        MetricsSystem.bootstrap(m)
        return m
    }()

    static var cohort: String {
        URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent("cohort").path
    }

    func group(_ workers: Int, stepTimeout: Double = 5, transport: WorkerGroup.Configuration.Transport = .sharedMemory) throws -> WorkerGroup {
        try WorkerGroup(
            workers: workers,
            configuration: .init(executable: Self.cohort, transport: transport, stepDeadline: StepDeadline(fixed: stepTimeout)))
    }

    static let transports: [WorkerGroup.Configuration.Transport] = [.sharedMemory, .tcp(host: "127.0.0.1")]

    static func request(_ step: UInt64) -> StepRequest {
        StepRequest(step: step, sequences: [.init(id: 1, tokens: [5], startPosition: 3, blockTable: [0]), .init(id: 2, tokens: [6, 7], startPosition: 0, blockTable: [1], sample: false)])
    }

    /// The state letter in /proc/PID/stat (R, S, T, Z…).
    func state(_ pid: Int32) -> Substring? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return nil }
        return stat.split(separator: ")").last?.split(separator: " ").first
    }

    func isRunning(_ pid: Int32) -> Bool {
        // kill(pid, 0) succeeds for zombies too; /proc/PID/stat's state tells them apart.
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return false }
        let state = stat.split(separator: ")").last?.split(separator: " ").first
        return state != "Z" && state != "X"
    }

    @Test("steps reach every worker and come back in rank order and are timed; shutdown twice is safe", arguments: transports)
    func stepsAndShutdown(transport: WorkerGroup.Configuration.Transport) throws {
        let metrics = Self.metrics
        let g = try group(3, transport: transport)
        for step in 0..<100 {
            let outputs = try g.step(Self.request(UInt64(step)))
            #expect(outputs.count == 3)
            #expect(outputs.allSatisfy { $0.step == UInt64(step) && $0.samples.map(\.sequenceID) == [1] })
        }
        let timer = try metrics.expectTimer("cohort_control_plane_step_seconds")
        #expect(timer.values.count >= 100 && timer.values.allSatisfy { $0 > 0 })
        try g.healthCheck()
        let pids = g.members.map(\.pid)
        g.shutdown()
        g.shutdown()
        #expect(pids.allSatisfy { !isRunning($0) })
        #expect(throws: WorkerFailure.shutDown) { try g.step(Self.request(100)) }
    }

    @Test("the execution loop stops and restarts without the workers exiting; no step is sent while stopped",
          arguments: transports)
    func executionLoop(transport: WorkerGroup.Configuration.Transport) throws {
        let g = try group(2, transport: transport)
        defer { g.shutdown() }
        _ = try g.step(Self.request(0))
        let pids = g.members.map(\.pid)
        try g.stopExecutionLoop()
        try g.stopExecutionLoop()  // idempotent
        #expect(!g.isLooping)
        try g.healthCheck()  // still up and answering
        #expect(throws: WorkerFailure.loopStopped(step: 1)) { try g.step(Self.request(1)) }
        try g.startExecutionLoop()
        // The step numbers go on where they were: the refused step 1 was never sent.
        for step in 1..<4 { #expect(try g.step(Self.request(UInt64(step))).allSatisfy { $0.step == UInt64(step) }) }
        #expect(g.members.map(\.pid) == pids && pids.allSatisfy { isRunning($0) })
    }

    @Test("start-up phases out of order are refused by the worker, naming the phase, rank and pid")
    func startupOrder() throws {
        let g = try group(2)
        defer { g.shutdown() }
        let pids = g.members.map(\.pid)
        #expect {
            _ = try g.replies(to: try g.post(.loadModel, what: "loading the model"))
        } throws: { error in
            guard case let .unhealthy(rank, pid, _, message) = error as? WorkerFailure else { return false }
            return rank == 1 && pid == pids[0] && message == "loading the model: loadModel before initializeDevice"
        }
    }

    @Test("a worker killed with SIGKILL fails the pending step within 1 s, naming rank, pid and signal; no process remains",
          arguments: transports)
    func killedWorker(transport: WorkerGroup.Configuration.Transport) throws {
        let g = try group(3, transport: transport)
        _ = try g.step(Self.request(0))
        let victim = g.members[1]
        kill(victim.pid, SIGKILL)
        let start = Date()
        var failure: WorkerFailure?
        do {
            for step in 1..<100_000 { _ = try g.step(Self.request(UInt64(step))) }
        } catch let error as WorkerFailure {
            failure = error
        }
        #expect(Date().timeIntervalSince(start) < 1)
        #expect(failure == .died(rank: 2, pid: victim.pid, machine: victim.machine, termination: .signaled(signal: SIGKILL)))
        #expect(failure?.description == "worker rank 2 (pid \(victim.pid) on \(victim.machine)) was killed by signal 9 (SIGKILL)")
        #expect(g.members.allSatisfy { !isRunning($0.pid) })
    }

    @Test("a worker sent SIGTERM by hand is reported killed by SIGTERM, not as a clean exit")
    func terminatedWorker() throws {
        let g = try group(2)
        _ = try g.step(Self.request(0))
        let victim = g.members[0]
        kill(victim.pid, SIGTERM)
        #expect {
            for step in 1..<100_000 { _ = try g.step(Self.request(UInt64(step))) }
        } throws: { error in
            error as? WorkerFailure == .died(rank: 1, pid: victim.pid, machine: victim.machine, termination: .signaled(signal: SIGTERM))
        }
        #expect(g.members.allSatisfy { !isRunning($0.pid) })
    }

    /// Linux's parent-death signal follows the spawning *thread*: a grid started from a thread
    /// that then ends (as Swift's pool threads do after seconds idle) lost its workers to
    /// SIGTERM while the driver ran ("worker rank 1 exited with status 0" in CI).
    @Test("workers outlive the thread that started them", arguments: transports)
    func startedFromEndedThread(transport: WorkerGroup.Configuration.Transport) throws {
        let made = Mutex<Result<WorkerGroup, any Error>?>(nil)
        let thread = Threads.start { made.withLock { $0 = Result { try self.group(2, transport: transport) } } }
        Threads.join(thread)
        let g = try #require(made.withLock { $0 }).get()
        let until = Date().addingTimeInterval(1)
        var step: UInt64 = 0
        while Date() < until {
            _ = try g.step(Self.request(step))
            step += 1
            usleep(10_000)
        }
        try g.healthCheck()
        #expect(g.members.allSatisfy { isRunning($0.pid) })
        g.shutdown()
    }

    @Test("a stopped worker is named stuck, with rank, pid and step, within 2 s: its heartbeats stop", arguments: transports)
    func stuckWorker(transport: WorkerGroup.Configuration.Transport) throws {
        let g = try group(2, stepTimeout: 60, transport: transport)
        _ = try g.step(Self.request(0))
        let victim = g.members[0]
        kill(victim.pid, SIGSTOP)
        // kill() returns before the signal lands: wait until the process is really stopped.
        while state(victim.pid) != "T" { usleep(1_000) }
        let start = Date()
        #expect {
            _ = try g.step(Self.request(1))
        } throws: { error in
            guard case let .silent(rank, pid, _, seconds, during) = error as? WorkerFailure else { return false }
            return rank == 1 && pid == victim.pid && during == "step 1" && seconds >= 1
                && "\(error)".contains("worker rank 1 (pid \(victim.pid) on ") && "\(error)".contains("is stuck during step 1: no heartbeat for")
        }
        #expect(Date().timeIntervalSince(start) < 2)
        #expect(g.members.allSatisfy { !isRunning($0.pid) })
    }

    @Test("health tells alive, stuck and dead ranks apart, with heartbeat ages and last steps")
    func health() throws {
        let g = try group(3, stepTimeout: 60)
        defer { g.shutdown() }
        for step in 0..<3 { _ = try g.step(Self.request(UInt64(step))) }
        usleep(200_000)  // a heartbeat after the last step
        var report = g.health()
        #expect(report.map(\.rank) == [1, 2, 3])
        #expect(report.allSatisfy { $0.status == .alive && $0.lastStep == 2 && ($0.heartbeatAge ?? 9) < 0.5 })
        kill(g.members[0].pid, SIGSTOP)
        kill(g.members[1].pid, SIGKILL)
        let start = Date()
        repeat {
            usleep(50_000)
            report = g.health()
        } while (report[0].isAlive || report[1].isAlive) && Date().timeIntervalSince(start) < 3
        guard case .stuck = report[0].status else { Issue.record("rank 1: \(report[0])"); return }
        #expect(report[1].status == .dead("was killed by signal 9 (SIGKILL)"), "\(report[1])")
        #expect(report[2].status == .alive)
        #expect(Date().timeIntervalSince(start) < 2)
        kill(g.members[0].pid, SIGCONT)
    }

    @Test("each CPU worker runs on its own share of the machine's CPUs")
    func cpuSets() throws {
        let g = try group(2)
        defer { g.shutdown() }
        func allowed(_ pid: Int32) throws -> String {
            let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
            let line = try #require(status.split(separator: "\n").first { $0.hasPrefix("Cpus_allowed_list:") })
            return line.split(separator: "\t").last.map(String.init) ?? ""
        }
        let mine = try allowed(getpid())
        let cpus = mine.split(separator: ",").flatMap { part -> [Int] in
            let bounds = part.split(separator: "-").compactMap { Int($0) }
            return bounds.count == 2 ? Array(bounds[0]...bounds[1]) : bounds
        }
        let expected = Placement.cpuSets(cpus: cpus, workers: 2).map { set in set.map(String.init).joined(separator: ",") }
        let found = try g.members.map { try allowed($0.pid) }
        // The kernel prints ranges ("0-1"); compare sets of CPUs.
        func expand(_ s: String) -> Set<Int> {
            Set(s.split(separator: ",").flatMap { part -> [Int] in
                let b = part.split(separator: "-").compactMap { Int($0) }
                return b.count == 2 ? Array(b[0]...b[1]) : b
            })
        }
        #expect(found.map(expand) == expected.map(expand))
    }

    @Test("workers join a rendezvous on an IPv6 address and take commands over TCP there; placement reports their addresses")
    func ipv6Rendezvous() throws {
        let g = try WorkerGroup(
            workers: 2, configuration: .init(executable: Self.cohort, transport: .tcp(host: "::1"), hostIP: "::1"))
        defer { g.shutdown() }
        for step in 0..<5 { #expect(try g.step(Self.request(UInt64(step))).count == 2) }
        #expect(g.assignments.map(\.address) == ["::1", "::1", "::1"])
        #expect(g.assignments.map(\.localRank) == [0, 1, 2])
        // One machine: the rendezvous is loopback whatever the driver's address.
        #expect(g.rendezvousHost == "127.0.0.1")
    }

    @Test("pre-flight names the rank, machine and file when a worker's model file is missing or differs from the driver's")
    func preflightModelFile() throws {
        let path = try TinyLlama().write()
        defer { TemporaryFiles.remove(path) }
        let identity = try ModelFileIdentity(path: path)
        for (shardPath, size, message) in [
            (path + ".missing", identity.size, "cannot be opened"),
            (path, identity.size + 1, "differs from the driver's: expected \(identity.size + 1) bytes"),
        ] {
            let g = try WorkerGroup(workers: 1, configuration: .init(executable: Self.cohort), configure: { _, context in
                WorkerConfiguration(
                    context: context,
                    model: .init(path: shardPath, fileSize: size, headerDigest: identity.headerDigest, threads: 1, precise: false,
                                 kvCacheMiB: 1, maxBatchTokens: 8, pipelineLayers: nil, shardBytes: 1),
                    commands: .tcp(host: "", port: 0))
            })
            defer { g.shutdown() }
            #expect {
                _ = try g.replies(to: try g.post(.preflight, what: "the pre-flight"))
            } throws: { error in
                guard case let .unhealthy(rank, _, machine, text) = error as? WorkerFailure else { return false }
                return rank == 1 && !machine.isEmpty && text.contains("pre-flight on \(machine)") && text.contains(message)
            }
        }
    }

    @Test("the rings' names are gone once workers attached: nothing else can attach")
    func foreignAttachRefused() throws {
        let g = try group(1)
        defer { g.shutdown() }
        #expect(g.ringNames.count == 2)
        for name in g.ringNames {
            #expect(throws: SharedMemoryError.self) { try SharedMemoryRing.attach(name: name) }
        }
        try g.healthCheck()
    }

    @Test("when the driver dies by SIGKILL, its workers exit within 1 s")
    func driverDeath() throws {
        // A driver process: `cohort bench control-plane` with many steps, killed mid-run.
        let driver = Process()
        driver.executableURL = URL(fileURLWithPath: Self.cohort)
        driver.arguments = ["bench", "control-plane", "--workers", "2", "--steps", "100000000"]
        driver.standardOutput = FileHandle.nullDevice
        try driver.run()
        var children: [Int32] = []
        for _ in 0..<200 where children.count < 2 {
            usleep(20_000)
            children = childPIDs(of: driver.processIdentifier)
        }
        try #require(children.count == 2, "the driver started \(children.count) workers")
        kill(driver.processIdentifier, SIGKILL)
        driver.waitUntilExit()
        let start = Date()
        while children.contains(where: isRunning) && Date().timeIntervalSince(start) < 3 { usleep(10_000) }
        #expect(Date().timeIntervalSince(start) < 1)
        #expect(!children.contains(where: isRunning))
    }

    @Test("a driver killed while its workers start leaves no shared-memory name behind", arguments: [0, 1, 2])
    func driverDeathDuringStart(attempt: Int) throws {
        let driver = Process()
        driver.executableURL = URL(fileURLWithPath: Self.cohort)
        driver.arguments = ["bench", "control-plane", "--workers", "4", "--steps", "100000000"]
        driver.standardOutput = FileHandle.nullDevice
        try driver.run()
        // Kill the driver as soon as its first worker exists (the others may not be spawned yet).
        var first: Int32?
        for _ in 0..<2000 where first == nil {
            first = childPIDs(of: driver.processIdentifier).first
            if first == nil { usleep(500) }
        }
        let child = try #require(first)
        // Until the child has exec'd, its command line is still the driver's.
        var arguments: [String] = []
        for _ in 0..<2000 where !arguments.contains("worker") {
            arguments = (try? String(contentsOfFile: "/proc/\(child)/cmdline", encoding: .utf8))?.split(separator: "\0").map(String.init) ?? []
            if !arguments.contains("worker") { usleep(500) }
        }
        // Later attempts kill later: before, while and after the driver makes its names.
        usleep(UInt32(attempt) * 150_000)
        // The names the driver has mapped so far (it creates them once every worker joined).
        let names = sharedMemoryNames(mappedBy: driver.processIdentifier)
        kill(driver.processIdentifier, SIGKILL)
        driver.waitUntilExit()
        let start = Date()
        func leftover() -> [String] { names.filter { FileManager.default.fileExists(atPath: "/dev/shm" + $0) } }
        while !leftover().isEmpty && Date().timeIntervalSince(start) < 3 { usleep(10_000) }
        #expect(leftover() == [], "attempt \(attempt)")
        for name in leftover() { unlink("/dev/shm" + name) }
    }

    @Test("a worker that is not the driver's child joins by address and secret, serves steps, and exits within 2 s of the driver's death")
    func detachedWorker() throws {
        let driver = Process()
        driver.executableURL = URL(fileURLWithPath: Self.cohort)
        driver.arguments = ["bench", "control-plane", "--workers", "1", "--steps", "100000000", "--launcher", "detached"]
        driver.standardOutput = FileHandle.nullDevice
        try driver.run()
        defer { if driver.isRunning { kill(driver.processIdentifier, SIGKILL) } }
        // The worker is nobody's child here: find it by its command line.
        var worker: Int32?
        for _ in 0..<400 where worker == nil {
            usleep(10_000)
            // setsid made it the leader of a session of its own; other tests' workers are not.
            worker = Self.processes(named: "worker").first { Self.session(of: $0) == $0 }
        }
        let pid = try #require(worker)
        #expect(Self.parent(of: pid) != driver.processIdentifier)
        // It serves steps: the driver's step count (its CPU time) grows while it runs.
        usleep(300_000)
        #expect(isRunning(pid))
        kill(driver.processIdentifier, SIGKILL)
        driver.waitUntilExit()
        let start = Date()
        while isRunning(pid) && Date().timeIntervalSince(start) < 4 { usleep(10_000) }
        #expect(!isRunning(pid))
        #expect(Date().timeIntervalSince(start) < 2)
    }

    static func processes(named argument: String) -> [Int32] {
        let all = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return all.compactMap(Int32.init).filter { pid in
            let arguments = (try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8))?.split(separator: "\0") ?? []
            return arguments.count > 1 && arguments[0].hasSuffix("cohort") && arguments[1] == Substring(argument)
        }
    }

    static func session(of pid: Int32) -> Int32? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let after = stat.split(separator: ")").last else {
            return nil
        }
        let fields = after.split(separator: " ")
        return fields.count > 3 ? Int32(fields[3]) : nil
    }

    static func parent(of pid: Int32) -> Int32? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let after = stat.split(separator: ")").last else {
            return nil
        }
        let fields = after.split(separator: " ")
        return fields.count > 1 ? Int32(fields[1]) : nil
    }

    func childPIDs(of parent: Int32) -> [Int32] {
        let all = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return all.compactMap(Int32.init).filter { pid in
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let afterName = stat.split(separator: ")").last else { return false }
            let fields = afterName.split(separator: " ")
            return fields.count > 1 && Int32(fields[1]) == parent && isRunning(pid)
        }
    }
}
