import CPlatform
import Transports

/// Which CPUs this process may use, and pinning to a subset (CPU workers' "devices").
public enum CPUAffinity {
    /// The CPUs in this process's affinity mask.
    public static func allowedCPUs() -> [Int] {
        var buffer = [Int32](repeating: 0, count: 1024)
        let n = cohort_allowed_cpus(&buffer, Int32(buffer.count))
        return n > 0 ? buffer[..<Int(n)].map(Int.init) : [0]
    }

    /// How long waits on a ring shared by `processes` processes of `threadsPerProcess`
    /// compute threads each should spin: every such thread wants a core while they compute.
    public static func ringSpinPolls(processes: Int, threadsPerProcess: Int) -> Int {
        SharedMemoryRing.spinPolls(parties: processes * max(1, threadsPerProcess), cores: allowedCPUs().count)
    }

    /// Restricts this process to `cpus` (best effort: an empty or invalid set is ignored).
    static func pin(to cpus: [Int]) {
        guard !cpus.isEmpty else { return }
        let ids = cpus.map(Int32.init)
        _ = cohort_set_affinity(ids, Int32(ids.count))
    }
}
