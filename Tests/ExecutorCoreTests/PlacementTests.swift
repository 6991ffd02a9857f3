import ExecutorCore
import Testing

@Suite struct PlacementTests {
    typealias W = Placement.LaunchedWorker

    @Test("driver's machine first, then machines with fewer workers, then by address (numerically)")
    func ordering() throws {
        let workers = [
            W(machineID: "c", address: "10.0.0.10", deviceIDs: [0]),
            W(machineID: "b", address: "10.0.0.9", deviceIDs: [1]),
            W(machineID: "d", address: "10.0.0.2", deviceIDs: [0]),  // alone on its machine
            W(machineID: "driver", address: "10.0.0.50", deviceIDs: [3]),
            W(machineID: "c", address: "10.0.0.10", deviceIDs: [1]),
            W(machineID: "driver", address: "10.0.0.50", deviceIDs: [2]),
            W(machineID: "b", address: "10.0.0.9", deviceIDs: [0]),
        ]
        let plan = try Placement.assign(workers: workers, driverMachineID: "driver", instanceID: "abc")
        #expect(plan.assignments.map(\.launchIndex) == [3, 5, 2, 1, 6, 0, 4])
        #expect(plan.assignments.map(\.rank) == Array(0..<7))
        #expect(plan.assignments.map(\.localRank) == [0, 1, 0, 0, 1, 0, 1])
        #expect(plan.assignments.allSatisfy { $0.worldSize == 7 && $0.environment["COHORT_INSTANCE_ID"] == "abc" })
        #expect(plan.assignments[0].environment["CUDA_VISIBLE_DEVICES"] == "2,3")
        #expect(plan.assignments[3].environment["CUDA_VISIBLE_DEVICES"] == "0,1")
        #expect(plan.rendezvousHost == "10.0.0.50" && plan.machineCount == 4)
    }

    @Test("device lists sort numerically with ten or more devices; one machine uses loopback")
    func numericDevices() throws {
        let ids = [10, 2, 11, 0, 1, 9, 3, 8, 4, 7, 5, 6]
        let workers = ids.map { W(machineID: "m", address: "192.168.1.5", deviceIDs: [$0]) }
        let plan = try Placement.assign(workers: workers, driverMachineID: "m", instanceID: "x")
        #expect(plan.assignments[0].environment["CUDA_VISIBLE_DEVICES"] == "0,1,2,3,4,5,6,7,8,9,10,11")
        #expect(plan.assignments.map(\.localRank) == Array(0..<12))
        #expect(plan.rendezvousHost == "127.0.0.1")
    }

    @Test("no worker on the driver's machine fails, naming the machine")
    func driverMachineMissing() {
        let workers = [W(machineID: "a", address: "1.1.1.1", deviceIDs: [0])]
        #expect(throws: PlacementError.self) { try Placement.assign(workers: workers, driverMachineID: "driver", instanceID: "x") }
        do {
            _ = try Placement.assign(workers: workers, driverMachineID: "driver", instanceID: "x")
        } catch {
            #expect(error.description.contains("'driver'") && error.description.contains("a"))
        }
    }

    @Test("CPU workers carry their own CPU set and thread count, GPU workers their machine's device list")
    func cpuWorkers() throws {
        let workers = [
            W(machineID: "m", address: "127.0.0.1", deviceIDs: []),
            W(machineID: "m", address: "127.0.0.1", deviceIDs: [2, 3]),
            W(machineID: "m", address: "127.0.0.1", deviceIDs: [0, 1]),
        ]
        let cpu = try Placement.assign(workers: workers, driverMachineID: "m", instanceID: "i", devices: .cpu)
        #expect(cpu.assignments.map(\.localRank) == [0, 1, 2])
        #expect(cpu.assignments[1].environment == ["COHORT_CPUS": "2,3", "COHORT_THREADS": "2", "COHORT_INSTANCE_ID": "i"])
        #expect(cpu.assignments[1].machineDeviceIDs == [0, 1, 2, 3])
        let gpu = try Placement.assign(workers: workers, driverMachineID: "m", instanceID: "i")
        #expect(gpu.assignments[2].environment["CUDA_VISIBLE_DEVICES"] == "0,1,2,3")
    }

    @Test("CPU workers get disjoint, even CPU sets and a thread per CPU")
    func cpuSets() {
        #expect(Placement.cpuSets(cpus: [3, 1, 0, 2, 4], workers: 2) == [[0, 1, 2], [3, 4]])
        #expect(Placement.cpuSets(cpus: Array(0..<16), workers: 4).map(\.count) == [4, 4, 4, 4])
        #expect(Placement.cpuSets(cpus: [0, 1], workers: 3) == [[0], [1], [0]])
        #expect(Placement.cpuEnvironment([2, 3]) == ["COHORT_CPUS": "2,3", "COHORT_THREADS": "2"])
    }

    @Test("layouts map ranks to stages and tensor ranks like the seed's pp_tp_workers")
    func layout() throws {
        let layout = try ParallelLayout(tensorParallel: 4, pipelineParallel: 2)
        #expect(layout.worldSize == 8)
        #expect(layout.ranks(ofStage: 1) == 4..<8)
        #expect(layout.stage(ofRank: 5) == 1 && layout.tensorRank(ofRank: 5) == 1)
        #expect(layout.rank(stage: 1, tensorRank: 3) == 7)
        #expect(throws: LayoutError.self) { try ParallelLayout(tensorParallel: 0) }
    }
}
