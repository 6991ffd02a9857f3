import ExecutorCore
import Launchers
import Transports
import WorkerRuntime
#if canImport(Glibc)
import Glibc
#endif

/// How worker processes join the driver: accept each at the rendezvous, read its hello,
/// refuse another build, then order them with the seed's placement.
enum Bootstrap {
    /// Workers that said hello, by join token − 1.
    struct Joined {
        var hellos: [WorkerHello]
        var links: [TCPConnection]
        var handles: [(any WorkerProcessHandle)?]
    }

    /// Joined workers in rank order.
    struct Placed {
        var members: [WorkerGroup.Member]
        var links: [TCPConnection]
        var plan: Placement.Plan
    }

    /// `HOST:PORT`, brackets around an IPv6 host.
    static func address(host: String, port: UInt16) -> String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    /// Accepts `workers` workers at `listener`. A worker the launcher watches that ends
    /// before joining fails the join at once, naming its token and exit.
    static func join(
        workers: Int, listener: TCPListener, secret: InstanceSecret, handles: [(any WorkerProcessHandle)?], build: String,
        timeout: Double, check: () throws -> Void = {}
    ) throws -> Joined {
        var hellos = [WorkerHello?](repeating: nil, count: workers)
        var links = [TCPConnection?](repeating: nil, count: workers)
        var writer = WireWriter()
        func abandon() {
            links.forEach { $0?.close() }
            for handle in handles { handle?.kill(timeout: 5) }
        }
        let deadline = MonotonicClock.now() + timeout
        do {
            while links.contains(where: { $0 == nil }) {
                let left = deadline - MonotonicClock.now()
                let missing = links.indices.filter { links[$0] == nil }.map { "\($0 + 1)" }.joined(separator: ", ")
                guard left > 0 else {
                    throw ExecutorError("workers with join tokens \(missing) did not join \(listener.host):\(listener.port) within \(Int(timeout)) s")
                }
                let link = try listener.accept(rank: 0, secret: secret, timeout: left) {
                    try check()
                    for (i, handle) in handles.enumerated() where links[i] == nil {
                        if let t = handle?.termination() {
                            throw ExecutorError("worker with join token \(i + 1) (pid \(handle!.pid)) \(t) before joining the driver")
                        }
                    }
                }
                let hello: WorkerHello
                do { hello = try link.receive(timeout: 10) { try WorkerHello(decoding: $0) } } catch {
                    listener.log("refused \(link.peer): no worker hello (\(error))")
                    link.close()
                    continue
                }
                let index = hello.joinToken - 1
                guard links.indices.contains(index), links[index] == nil else {
                    listener.log("refused \(link.peer): join token \(hello.joinToken) is not an unjoined worker of 1...\(workers)")
                    link.close()
                    continue
                }
                guard hello.wireVersion == Wire.version, hello.build == build else {
                    let message = "worker with join token \(hello.joinToken) (pid \(hello.processID) on \(hello.machineID)) runs another build: "
                        + "expected \(build), found \(hello.build) (wire \(hello.wireVersion))"
                    WorkerReply.failed(rank: -1, message: message).encode(into: &writer)
                    try? writer.withBytes { try link.send($0, timeout: 1) }
                    link.close()
                    throw ExecutorError(message)
                }
                hellos[index] = hello
                links[index] = link
            }
        } catch {
            abandon()
            throw error
        }
        return Joined(hellos: hellos.map { $0! }, links: links.map { $0! }, handles: handles)
    }

    /// The seed's placement: the driver (rank 0) on its machine first, then machines with
    /// fewer workers, then by address. CPU workers on one machine split its CPUs; rank 0
    /// shares the driver's process and is not pinned.
    static func place(_ joined: Joined, driverAddress: String, instanceID: String) throws -> Placed {
        let driverMachine = Machine.hostName()
        // Each machine's CPUs, split among the worker processes there.
        var perMachine: [String: [Int]] = [:]
        for (i, hello) in joined.hellos.enumerated() { perMachine[hello.machineID, default: []].append(i) }
        var cpuSets = [[Int]](repeating: [], count: joined.hellos.count)
        for (_, indices) in perMachine {
            let sets = Placement.cpuSets(cpus: joined.hellos[indices[0]].deviceIDs, workers: indices.count)
            for (k, i) in indices.enumerated() { cpuSets[i] = sets[k] }
        }
        let launched = [Placement.LaunchedWorker(machineID: driverMachine, address: driverAddress, processID: getpid(), deviceIDs: [])]
            + joined.hellos.enumerated().map { i, hello in
                Placement.LaunchedWorker(machineID: hello.machineID, address: hello.address, processID: hello.processID, deviceIDs: cpuSets[i])
            }
        let plan = try Placement.assign(workers: launched, driverMachineID: driverMachine, instanceID: instanceID, devices: .cpu)
        var members: [WorkerGroup.Member] = []
        var links: [TCPConnection] = []
        for assignment in plan.assignments.dropFirst() {
            precondition(assignment.launchIndex > 0, "the driver's own entry is rank 0")
            let i = assignment.launchIndex - 1
            members.append(WorkerGroup.Member(rank: assignment.rank, hello: joined.hellos[i], handle: joined.handles[i]))
            links.append(joined.links[i])
        }
        return Placed(members: members, links: links, plan: plan)
    }

    /// Ends workers that joined but will not be configured.
    static func abandon(_ joined: Joined, launcher: any Launcher) {
        joined.links.forEach { $0.close() }
        launcher.releaseLifeline()
        for handle in joined.handles { handle?.kill(timeout: 5) }
        launcher.finished(orderly: false)
    }

    /// Waits up to `grace` for every worker to exit (their links are closed by now), then
    /// kills the rest: through the launcher's handle, or by pid when it runs on this machine.
    static func stop(_ members: [WorkerGroup.Member], grace: Double) {
        waitForExit(members, seconds: grace)
        let here = Machine.hostName()
        for member in members {
            if let handle = member.handle {
                handle.kill(timeout: 5)  // reaps; nothing to do for one that exited
            } else if member.machine == here, isRunning(member.pid) {
                kill(member.pid, SIGKILL)
            }
        }
    }

    /// Waits up to `seconds` for every worker to exit by itself.
    static func waitForExit(_ members: [WorkerGroup.Member], seconds: Double) {
        let here = Machine.hostName()
        let deadline = MonotonicClock.now() + seconds
        for member in members {
            if let handle = member.handle {
                _ = handle.wait(timeout: max(0, deadline - MonotonicClock.now()))
            } else if member.machine == here {
                while isRunning(member.pid) && MonotonicClock.now() < deadline { usleep(1_000) }
            }
        }
    }

    /// Whether a process on this machine runs (a zombie counts as ended).
    static func isRunning(_ pid: Int32) -> Bool {
        guard let stat = try? Machine.readText("/proc/\(pid)/stat") else { return false }
        guard let close = stat.lastIndex(of: ")") else { return false }
        let state = stat[stat.index(after: close)...].dropFirst().first
        return state != "Z" && state != "X"
    }
}
