#if canImport(Glibc)
import Glibc
#endif
internal import CPlatform
import ExecutorCore

/// Starts workers on the machines of a host list through a remote shell, as `mpirun` starts
/// its daemons: `ssh HOST 'exec cohort worker --driver … --join N --secret-stdin'`, one per
/// slot (`--hosts a:2,b:2`: two slots on a, two on b). The driver takes one slot on its own
/// host when the list names it (by host name); workers fill the other slots in order.
///
/// The instance secret goes down the shell's standard input (ssh encrypts it; it never
/// appears on a command line or in a remote environment). The local shell process is the
/// worker's handle: ssh exits with the remote command's status, so a worker that dies is
/// reported with its status as soon as its link closes. `ssh` needs the same `cohort` binary
/// and model file at the same paths on every host; `scripts/host-agent` is the same shell for
/// the simulated hosts of `scripts/hosts.sh`.
public struct RemoteShellLauncher: Launcher {
    public struct Host: Sendable, Equatable {
        public var name: String
        public var slots: Int
        public init(name: String, slots: Int) {
            self.name = name
            self.slots = slots
        }
    }

    public let hosts: [Host]
    /// The remote shell and its options; the host and the command follow them.
    public let shell: [String]
    /// The driver's host name, whose slot it takes when the list names it.
    public let driverHost: String

    public init(hosts: [Host], shell: [String] = ["ssh", "-o", "BatchMode=yes"], driverHost: String) {
        self.hosts = hosts
        self.shell = shell
        self.driverHost = driverHost
    }

    /// `a:2,b:2` (a host without a count has one slot).
    public static func parseHosts(_ text: String) throws(LaunchError) -> [Host] {
        var hosts: [Host] = []
        for entry in text.split(separator: ",", omittingEmptySubsequences: false) {
            let parts = entry.split(separator: ":", omittingEmptySubsequences: false)
            guard (1...2).contains(parts.count), !parts[0].isEmpty, !parts[0].contains(where: \.isWhitespace) else {
                throw LaunchError("--hosts takes HOST:SLOTS entries separated by commas (e.g. a:2,b:2), found '\(entry)' in '\(text)'")
            }
            let slots = parts.count == 2 ? Int(parts[1]) : 1
            guard let slots, slots >= 1 else {
                throw LaunchError("--hosts: the slot count of '\(entry)' must be a whole number ≥ 1, found '\(parts[1])'")
            }
            hosts.append(Host(name: String(parts[0]), slots: slots))
        }
        return hosts
    }

    /// The host of each of `workers` workers, in join-token order.
    public func workerHosts(_ workers: Int) throws(LaunchError) -> [String] {
        var placed: [String] = [], driverPlaced = false
        for host in hosts {
            var slots = host.slots
            if !driverPlaced && host.name == driverHost {
                slots -= 1
                driverPlaced = true
            }
            placed += Array(repeating: host.name, count: slots)
        }
        guard placed.count >= workers else {
            let list = hosts.map { "\($0.name):\($0.slots)" }.joined(separator: ",")
            throw LaunchError(
                "--hosts \(list) has \(placed.count) worker slot\(placed.count == 1 ? "" : "s")"
                    + (driverPlaced ? " besides the driver's on \(driverHost)" : "")
                    + "; this grid needs \(workers) workers (one rank per slot, rank 0 in the driver)")
        }
        return Array(placed.prefix(workers))
    }

    public func launch(workers: Int, join: JoinInstructions) throws(LaunchError) -> [(any WorkerProcessHandle)?] {
        guard let program = shell.first else { throw LaunchError("the remote shell command is empty") }
        let executable = try Self.resolve(program)
        let targets = try workerHosts(workers)
        var started: [ChildProcess] = []
        for (i, host) in targets.enumerated() {
            let token = i + 1
            let command = "exec " + ([join.executable] + join.arguments(joinToken: token) + ["--secret-stdin"])
                .map(DetachedLauncher.quoted).joined(separator: " ")
            do throws(LaunchError) {
                var fds: [Int32] = [-1, -1]
                guard cohort_pipe_cloexec(&fds) == 0 else {
                    throw LaunchError("cannot create a pipe for worker \(token)'s secret: \(String(cString: strerror(errno)))")
                }
                defer { close(fds[0]) }
                let child: ChildProcess
                do throws(LaunchError) {
                    child = try LocalProcessLauncher.spawn(
                        executable: executable, index: i, arguments: Array(shell.dropFirst()) + [host, command], environment: [:],
                        lifeline: nil, standardInput: fds[0])
                } catch {
                    close(fds[1])
                    throw error
                }
                started.append(child)
                let line = Array((join.secretHex + "\n").utf8)
                let written = line.withUnsafeBytes { write(fds[1], $0.baseAddress, $0.count) }
                close(fds[1])
                guard written == line.count else {
                    throw LaunchError("cannot hand worker \(token) on \(host) its secret through \(program): \(String(cString: strerror(errno)))")
                }
            } catch {
                for child in started { child.kill(timeout: 5) }
                throw error
            }
        }
        return started
    }

    public func releaseLifeline() {}

    /// `program`'s path: as given when it holds a slash, else the first match on PATH.
    static func resolve(_ program: String) throws(LaunchError) -> String {
        if program.contains("/") {
            guard access(program, X_OK) == 0 else { throw LaunchError("the remote shell \(program) is not an executable file") }
            return program
        }
        let path = getenv("PATH").map { String(cString: $0) } ?? "/usr/bin:/bin"
        for directory in path.split(separator: ":") {
            let candidate = "\(directory)/\(program)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        throw LaunchError("the remote shell '\(program)' is not on PATH (\(path))")
    }
}
