import ExecutorCore
import Foundation
import Synchronization
import Testing
import Transports

@Suite struct HandshakeTests {
    let secret = InstanceSecret.random()

    /// Runs a whole handshake through the state machine; returns the acceptor's last action.
    func run(connector: Handshake.Connector, acceptor: inout Handshake.Acceptor, byteByByte: Bool = false) throws -> Handshake.Acceptor.Action {
        func feed(_ bytes: [UInt8]) -> Handshake.Acceptor.Action {
            guard byteByByte else { return acceptor.receive(bytes) }
            var last = Handshake.Acceptor.Action.needMore
            for b in bytes { last = acceptor.receive([b]) }
            return last
        }
        guard case let .send(challenge) = feed(connector.hello) else { throw HandshakeError.refused("no challenge") }
        let (proof, rank) = try connector.answer(challenge)
        #expect(rank == 0)
        return feed(proof)
    }

    @Test("both sides holding the secret finish, whole or byte by byte; the secret itself is never sent")
    func success() throws {
        for byteByByte in [false, true] {
            var acceptor = Handshake.Acceptor(secret: secret, rank: 0)
            let connector = Handshake.Connector(secret: secret, rank: 3)
            #expect(try run(connector: connector, acceptor: &acceptor, byteByByte: byteByByte) == .accept(peerRank: 3, reply: Array("CTOK".utf8)))
            let sent = connector.hello
            #expect(sent.count == Handshake.helloBytes)
            #expect(!Data(sent).contains(Data(secret.bytes)))
        }
    }

    @Test("a connector with another secret is refused, and finds that the acceptor cannot prove its own")
    func wrongSecret() throws {
        var acceptor = Handshake.Acceptor(secret: secret, rank: 0)
        let stranger = Handshake.Connector(secret: .random(), rank: 1)
        guard case let .send(challenge) = acceptor.receive(stranger.hello) else { Issue.record("no challenge"); return }
        #expect(throws: HandshakeError.refused("it could not prove the instance secret")) { try stranger.answer(challenge) }
        // A stranger that sends a proof anyway (made with its own secret) is refused.
        let honest = Handshake.Connector(secret: secret, rank: 1, nonce: [UInt8](repeating: 7, count: 32))
        var other = Handshake.Acceptor(secret: secret, rank: 0)
        guard case .send = other.receive(honest.hello) else { Issue.record("no challenge"); return }
        guard case let .refuse(reason) = other.receive([UInt8](repeating: 1, count: Handshake.proofBytes)) else {
            Issue.record("accepted a forged proof"); return
        }
        #expect(reason.contains("claiming rank 1: wrong instance secret"))
    }

    @Test("a recorded handshake replayed to a new acceptor is refused: its challenge is new")
    func replay() throws {
        let connector = Handshake.Connector(secret: secret, rank: 2)
        var first = Handshake.Acceptor(secret: secret, rank: 0)
        guard case let .send(challenge) = first.receive(connector.hello) else { Issue.record("no challenge"); return }
        let (proof, _) = try connector.answer(challenge)
        #expect(first.receive(proof) == .accept(peerRank: 2, reply: Array("CTOK".utf8)))
        // An eavesdropper replays hello and proof.
        var second = Handshake.Acceptor(secret: secret, rank: 0)
        guard case .send = second.receive(connector.hello) else { Issue.record("no challenge"); return }
        guard case let .refuse(reason) = second.receive(proof) else { Issue.record("accepted a replay"); return }
        #expect(reason.contains("wrong instance secret"))
    }

    @Test("another protocol or version is refused after its first bytes, naming what it sent")
    func otherProtocols() {
        var http = Handshake.Acceptor(secret: secret, rank: 0)
        guard case let .refuse(reason) = http.receive(Array("GET / HTTP/1.1\r\n".utf8)) else { Issue.record("accepted HTTP"); return }
        #expect(reason.contains("not the Cohort protocol"))
        var old = Handshake.Acceptor(secret: secret, rank: 0)
        guard case let .refuse(version) = old.receive(Array("CTCP".utf8) + [1, 0, 0, 0]) else { Issue.record("accepted version 1"); return }
        #expect(version == "protocol version 1, expected 2")
        var partial = Handshake.Acceptor(secret: secret, rank: 0)
        #expect(partial.receive(Array("CT".utf8)) == .needMore)
    }

    @Test("100 idle connections, a wrong secret and a replayed handshake hold up no one: the peer is accepted at once and each stranger is logged")
    func strangersDoNotDelay() throws {
        let listener = try TCPListener()
        let log = Mutex<[String]>([])
        listener.log = { line in log.withLock { $0.append(line) } }
        var idle: [Int32] = []
        defer { idle.forEach { close($0) } }
        for _ in 0..<100 {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = listener.port.bigEndian
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, 16) } }
            idle.append(fd)
        }
        let port = listener.port, secret = self.secret
        // A wrong secret, a replay of a recorded proof, then the real peer, from another thread.
        let peer = Mutex<Result<Int, any Error>?>(nil)
        let replayAnswered = Mutex<Int>(-2)
        let started = Date()
        // A handshake recorded from another session with this secret, to replay.
        let recorded = Handshake.Connector(secret: secret, rank: 4)
        var elsewhere = Handshake.Acceptor(secret: secret, rank: 0)
        guard case let .send(oldChallenge) = elsewhere.receive(recorded.hello) else { Issue.record("no challenge"); return }
        let recordedProof = try recorded.answer(oldChallenge).proof
        let thread = Thread {
            _ = try? TCPConnection.connect(host: "127.0.0.1", port: port, rank: 5, secret: .random(), timeout: 5)
            // The replay: the recorded hello, then the recorded proof whatever the challenge.
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = port.bigEndian
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, 16) } }
            _ = recorded.hello.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
            var challenge = [UInt8](repeating: 0, count: Handshake.challengeBytes)
            _ = challenge.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_WAITALL)) }
            _ = recordedProof.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
            var answer = [UInt8](repeating: 0, count: 4)
            let n = answer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_WAITALL)) }
            replayAnswered.withLock { $0 = n }
            close(fd)
            peer.withLock {
                $0 = Result { try TCPConnection.connect(host: "127.0.0.1", port: port, rank: 1, secret: secret, timeout: 5).peerRank }
            }
        }
        thread.start()
        let accepted = try listener.accept(rank: 0, secret: secret, timeout: 10, handshakeTimeout: 0.5)
        let elapsed = Date().timeIntervalSince(started)
        #expect(accepted.peerRank == 1)
        #expect(elapsed < 1, "the peer waited \(elapsed) s behind the strangers")
        while peer.withLock({ $0 == nil }) { usleep(1_000) }
        #expect(try peer.withLock { try $0!.get() } == 0)
        // The idle ones are dropped at their deadline, each logged with its address.
        _ = try? listener.accept(rank: 0, secret: secret, timeout: 1, handshakeTimeout: 0.5)
        let lines = log.withLock { $0 }
        #expect(lines.filter { $0.contains("no Cohort handshake within 0.5 s") }.count == 100, "\(lines.count) lines")
        #expect(lines.contains { $0.contains("127.0.0.1:") && $0.contains("closed the connection during the handshake") })
        #expect(lines.contains { $0.contains("claiming rank 4: wrong instance secret") }, "\(lines.filter { !$0.contains("no Cohort") })")
        #expect(replayAnswered.withLock { $0 } == 0)  // closed: no CTOK for the replay
    }
}
