/// Where workers go and who they are: the seed's `_init_workers_ray` placement rules as a
/// pure function, shared by every launcher (in-process, local processes, MPI, Ray).
///
/// Once every worker has joined, `Placement.assign` orders the workers as they reported
/// themselves (machine, address, devices): the driver's machine first, then machines with fewer workers, then by
/// address; global ranks follow that order and a local rank is the index among the
/// machine's workers. Each worker's environment carries the instance id shared by all and
/// its devices: a GPU worker its machine's device list (`CUDA_VISIBLE_DEVICES`, sorted
/// numerically), a CPU worker its own CPU set (`COHORT_CPUS`) and thread count.
public enum Placement {
    /// A worker as a launcher reports it.
    public struct LaunchedWorker: Sendable, Hashable {
        public var machineID: String
        public var address: String
        public var processID: Int32?
        /// The devices the launcher gave this worker.
        public var deviceIDs: [Int]
        public init(machineID: String, address: String, processID: Int32? = nil, deviceIDs: [Int]) {
            self.machineID = machineID
            self.address = address
            self.processID = processID
            self.deviceIDs = deviceIDs
        }
    }

    /// Everything a worker needs to know about its place.
    public struct Assignment: Sendable, Hashable {
        public var rank: Int
        public var localRank: Int
        public var worldSize: Int
        /// Index of this worker in the launcher's list.
        public var launchIndex: Int
        public var machineID: String
        public var address: String
        /// Device ids of all workers on this machine, sorted numerically; the worker uses
        /// the one at its local rank.
        public var machineDeviceIDs: [Int]
        public var environment: [String: String]
    }

    public struct Plan: Sendable, Hashable {
        /// Assignments by global rank.
        public var assignments: [Assignment]
        /// Loopback when every worker shares one machine, else the driver's address.
        public var rendezvousHost: String
        public var machineCount: Int
    }

    /// What a worker's devices are.
    public enum DeviceKind: Sendable, Equatable {
        /// GPUs: every worker sees its machine's list and uses the one at its local rank.
        case gpu
        /// CPUs: every worker owns a disjoint CPU set and runs a thread per CPU.
        case cpu
    }

    static func environment(devices: [Int], kind: DeviceKind) -> [String: String] {
        switch kind {
        case .gpu: [Environment.visibleDevices: devices.map(String.init).joined(separator: ",")]
        case .cpu: cpuEnvironment(devices)
        }
    }

    /// Environment variable names, in one table.
    public enum Environment {
        public static let visibleDevices = "CUDA_VISIBLE_DEVICES"
        public static let instanceID = "COHORT_INSTANCE_ID"
        /// The instance secret, as hex: passed in the environment, never on a command line.
        public static let secret = "COHORT_SECRET"
        /// CPU workers: the CPUs the worker may run on ("0,1") and how many threads it starts.
        public static let cpuSet = "COHORT_CPUS"
        public static let threads = "COHORT_THREADS"
    }

    /// CPU workers instead of devices: splits a machine's CPUs into `workers` contiguous,
    /// disjoint sets as evenly as possible (the first sets get the extra CPUs). When there
    /// are fewer CPUs than workers, workers share them round-robin, one CPU each.
    public static func cpuSets(cpus: [Int], workers: Int) -> [[Int]] {
        precondition(workers >= 1, "at least one worker")
        let sorted = cpus.sorted()
        guard sorted.count >= workers else {
            return (0..<workers).map { sorted.isEmpty ? [] : [sorted[$0 % sorted.count]] }
        }
        var sets: [[Int]] = []
        var start = 0
        for w in 0..<workers {
            let size = sorted.count / workers + (w < sorted.count % workers ? 1 : 0)
            sets.append(Array(sorted[start..<(start + size)]))
            start += size
        }
        return sets
    }

    /// The environment of a CPU worker that owns `cpus`: its CPU set and one thread per CPU.
    public static func cpuEnvironment(_ cpus: [Int]) -> [String: String] {
        [Environment.cpuSet: cpus.map(String.init).joined(separator: ","), Environment.threads: "\(max(1, cpus.count))"]
    }

    // MARK: - After launch

    /// Orders launched workers into ranks and builds each one's environment.
    /// - Throws: when no worker runs on the driver's machine.
    public static func assign(
        workers: [LaunchedWorker], driverMachineID: String, instanceID: String, devices: DeviceKind = .gpu
    ) throws(PlacementError) -> Plan {
        guard let driverIndex = workers.firstIndex(where: { $0.machineID == driverMachineID }) else {
            let found = Set(workers.map(\.machineID)).sorted().joined(separator: ", ")
            throw PlacementError("no worker runs on the driver's machine '\(driverMachineID)' (workers are on: \(found)); rank 0 must run there")
        }
        // The driver's worker is rank 0; the rest sort by (not driver's machine, workers on
        // that machine, address), as the seed does, with addresses compared numerically.
        var others = Array(workers.indices.filter { $0 != driverIndex })
        var perMachine: [String: Int] = [:]
        for i in others { perMachine[workers[i].machineID, default: 0] += 1 }
        others.sort { a, b in
            let wa = workers[a], wb = workers[b]
            let ka = (wa.machineID != driverMachineID, perMachine[wa.machineID]!), kb = (wb.machineID != driverMachineID, perMachine[wb.machineID]!)
            if ka != kb { return !ka.0 && kb.0 || (ka.0 == kb.0 && ka.1 < kb.1) }
            if wa.address != wb.address { return AddressOrder.less(wa.address, wb.address) }
            if wa.machineID != wb.machineID { return wa.machineID < wb.machineID }
            return a < b
        }
        let order = [driverIndex] + others

        var ranksOnMachine: [String: [Int]] = [:]
        var devicesOnMachine: [String: [Int]] = [:]
        for (rank, index) in order.enumerated() {
            ranksOnMachine[workers[index].machineID, default: []].append(rank)
            devicesOnMachine[workers[index].machineID, default: []].append(contentsOf: workers[index].deviceIDs)
        }
        let kind = devices
        let assignments = order.enumerated().map { rank, index in
            let w = workers[index]
            let machineDevices = devicesOnMachine[w.machineID]!.sorted()
            return Assignment(
                rank: rank, localRank: ranksOnMachine[w.machineID]!.firstIndex(of: rank)!, worldSize: workers.count,
                launchIndex: index, machineID: w.machineID, address: w.address, machineDeviceIDs: machineDevices,
                environment: Self.environment(devices: kind == .gpu ? machineDevices : w.deviceIDs, kind: kind)
                    .merging([Environment.instanceID: instanceID]) { $1 })
        }
        let machines = Set(workers.map(\.machineID)).count
        return Plan(
            assignments: assignments, rendezvousHost: machines == 1 ? "127.0.0.1" : workers[driverIndex].address,
            machineCount: machines)
    }
}

/// A placement that cannot be made; the message names the missing resource.
public struct PlacementError: Error, Equatable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Orders network addresses numerically where they parse (so 10.0.0.9 < 10.0.0.10), else
/// as text.
enum AddressOrder {
    static func less(_ a: String, _ b: String) -> Bool {
        switch (ipv4(a), ipv4(b)) {
        case let (x?, y?): return x < y
        case (_?, nil): return true
        case (nil, _?): return false
        case (nil, nil): return a < b
        }
    }

    static func ipv4(_ s: String) -> UInt32? {
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var value: UInt32 = 0
        for p in parts {
            guard let octet = UInt8(p) else { return nil }
            value = value << 8 | UInt32(octet)
        }
        return value
    }
}
