import Foundation
import Synchronization
import Testing
import Transports

@Suite struct SharedMemoryRingTests {
    @Test("every reader gets every message once, in order, under back-pressure", arguments: [1, 3])
    func broadcast(readers: Int) throws {
        let ring = try SharedMemoryRing.create(readers: readers, slots: 4, slotBytes: 256)
        defer { ring.close() }
        let messages = 3000
        let failures = Mutex<[String]>([])
        let finished = Mutex(0)
        let attached = try (0..<readers).map { _ in try SharedMemoryRing.attach(name: ring.name) }
        let threads = (0..<readers).map { reader in
            Thread {
                defer { finished.withLock { $0 += 1 } }
                for i in 0..<messages {
                    do {
                        let (seq, length, ok) = try attached[reader].read(reader: reader, timeout: 10) { bytes in
                            let seq = bytes.loadUnaligned(as: UInt64.self)
                            let ok = bytes.dropFirst(8).allSatisfy { $0 == UInt8(truncatingIfNeeded: seq) }
                            return (seq, bytes.count, ok)
                        }
                        if seq != UInt64(i) || length != 8 + i % 200 || !ok {
                            failures.withLock { $0.append("reader \(reader): message \(i) came as \(seq), \(length) bytes, ok \(ok)") }
                            return
                        }
                    } catch {
                        failures.withLock { $0.append("reader \(reader): \(error)") }
                        return
                    }
                }
            }
        }
        threads.forEach { $0.start() }
        for i in 0..<messages {
            try ring.write(timeout: 10) { slot in
                slot.storeBytes(of: UInt64(i), as: UInt64.self)
                for j in 0..<(i % 200) { slot[8 + j] = UInt8(truncatingIfNeeded: i) }
                return 8 + i % 200
            }
        }
        // Wait for the readers to drain (they acknowledge every message).
        let deadline = Date().addingTimeInterval(20)
        while finished.withLock({ $0 }) < readers && Date() < deadline { usleep(1_000) }
        #expect(finished.withLock { $0 } == readers)
        #expect(failures.withLock { $0 } == [])
        #expect(ring.published == UInt64(messages))
        attached.forEach { $0.close() }
    }

    @Test("a reader with no writer times out, naming what it waited for")
    func readTimeout() throws {
        let ring = try SharedMemoryRing.create(readers: 1)
        defer { ring.close() }
        #expect(throws: SharedMemoryError.timedOut(waitingFor: "message 0 for reader 0", seconds: 0.05)) {
            try ring.read(reader: 0, timeout: 0.05) { _ in () }
        }
    }

    @Test("a writer whose readers stop acknowledging times out")
    func writeTimeout() throws {
        let ring = try SharedMemoryRing.create(readers: 2, slots: 2, slotBytes: 16)
        defer { ring.close() }
        let empty = UnsafeRawBufferPointer(start: nil, count: 0)
        try ring.write(empty)
        try ring.write(empty)
        #expect(throws: SharedMemoryError.self) { try ring.write(empty, timeout: 0.05) }
    }

    @Test("messages larger than a slot are refused")
    func tooLarge() throws {
        let ring = try SharedMemoryRing.create(readers: 1, slots: 2, slotBytes: 16)
        defer { ring.close() }
        let big = [UInt8](repeating: 1, count: 17)
        #expect(throws: SharedMemoryError.messageTooLarge(bytes: 17, slotBytes: 16)) { try big.withUnsafeBytes { try ring.write($0) } }
    }

    @Test("the creator's spin budget reaches every party; parties outnumbering cores spin less")
    func spinPolls() throws {
        let ring = try SharedMemoryRing.create(readers: 2, slots: 2, slotBytes: 16, spinPolls: 37)
        defer { ring.close() }
        let peer = try SharedMemoryRing.attach(name: ring.name)
        defer { peer.close() }
        #expect(ring.spinLimit == 37 && peer.spinLimit == 37)
        #expect(SharedMemoryRing.spinPolls(parties: 2, cores: 2) > SharedMemoryRing.spinPolls(parties: 3, cores: 2))
        #expect(throws: SharedMemoryError.self) { try SharedMemoryRing.create(readers: 1, spinPolls: -1) }
    }

    @Test("names are unguessable, mode 0600, and gone after close")
    func naming() throws {
        let a = try SharedMemoryRing.create(readers: 1), b = try SharedMemoryRing.create(readers: 1)
        #expect(a.name != b.name && a.name.count >= 32)
        var info = stat()
        #expect(stat("/dev/shm" + a.name, &info) == 0)
        #expect(info.st_mode & 0o777 == 0o600)
        a.close()
        b.close()
        #expect(throws: SharedMemoryError.self) { try SharedMemoryRing.attach(name: a.name) }
    }

    @Test("attaching to something that is not a ring fails with what was found")
    func foreignSegment() throws {
        let name = "/cohort-test-foreign-\(getpid())"
        let fd = shm_open(name, O_CREAT | O_RDWR, 0o600)
        defer { shm_unlink(name) }
        ftruncate(fd, 4096)
        close(fd)
        #expect { try SharedMemoryRing.attach(name: name) } throws: { "\($0)".contains("magic") }
    }
}
