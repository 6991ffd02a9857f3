import Crypto

/// How two processes of one executor instance prove to each other that they hold the
/// instance secret, without sending it: a challenge and an HMAC-SHA256 each way, over
/// fresh nonces from both sides, so a recorded handshake is worth nothing later.
///
///     connector ── hello: "CTCP", version, rank, nonce C ─────────────────▶ acceptor
///     connector ◀── challenge: "CTCH", rank, nonce A, HMAC(acceptor | C | A | rank) ──
///     connector ── proof: HMAC(connector | A | C | rank) ─────────────────▶ acceptor
///     connector ◀── "CTOK" ──────────────────────────────────────────────── (or close)
///
/// `Handshake.Acceptor` is the acceptor's side as a state machine over received bytes: it
/// does no I/O, so the listener can run many handshakes at once (a stranger that sends
/// nothing holds up nobody) and tests can drive it byte by byte.
public enum Handshake {
    static let helloMagic: [UInt8] = Array("CTCP".utf8)
    static let challengeMagic: [UInt8] = Array("CTCH".utf8)
    static let okMagic: [UInt8] = Array("CTOK".utf8)
    /// Version 2: HMAC challenge and response (version 1 sent the secret itself).
    static let version: UInt32 = 2
    static let nonceBytes = 32
    static let macBytes = 32
    public static let helloBytes = 4 + 4 + 4 + nonceBytes
    public static let challengeBytes = 4 + 4 + nonceBytes + macBytes
    public static let proofBytes = macBytes

    static func nonce() -> [UInt8] {
        var g = SystemRandomNumberGenerator()
        return (0..<nonceBytes).map { _ in UInt8.random(in: 0...255, using: &g) }
    }

    static func le32(_ value: Int32) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }
    static func le32(_ value: UInt32) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }
    static func u32(_ bytes: ArraySlice<UInt8>) -> UInt32 {
        bytes.enumerated().reduce(0) { $0 | UInt32($1.element) << (8 * UInt32($1.offset)) }
    }

    static func mac(_ secret: InstanceSecret, _ label: String, _ parts: [UInt8]...) -> [UInt8] {
        var message = Array(label.utf8)
        for part in parts { message += part }
        return Array(HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: secret.bytes)))
    }

    static func valid(_ code: ArraySlice<UInt8>, _ secret: InstanceSecret, _ label: String, _ parts: [UInt8]...) -> Bool {
        var message = Array(label.utf8)
        for part in parts { message += part }
        return HMAC<SHA256>.isValidAuthenticationCode(Array(code), authenticating: message, using: SymmetricKey(data: secret.bytes))
    }

    // MARK: - Connector

    /// The connector's side, step by step (its I/O is blocking: `TCPConnection.connect`).
    public struct Connector: Sendable {
        let secret: InstanceSecret
        let rank: Int
        let nonce: [UInt8]

        public init(secret: InstanceSecret, rank: Int, nonce: [UInt8]? = nil) {
            self.secret = secret
            self.rank = rank
            self.nonce = nonce ?? Handshake.nonce()
        }

        public var hello: [UInt8] { helloMagic + le32(version) + le32(Int32(truncatingIfNeeded: rank)) + nonce }

        /// Checks the acceptor's challenge; returns the proof to send and the acceptor's rank.
        /// - Throws: a reason when the challenge is malformed or its HMAC is wrong (the
        ///   acceptor does not hold the secret).
        public func answer(_ challenge: [UInt8]) throws(HandshakeError) -> (proof: [UInt8], acceptorRank: Int) {
            guard challenge.count == challengeBytes, Array(challenge[0..<4]) == challengeMagic else {
                throw .refused("expected a Cohort challenge (CTCH), found \(challenge.prefix(4).map { String($0, radix: 16) })")
            }
            let acceptorRank = Array(challenge[4..<8])
            let theirs = Array(challenge[8..<(8 + nonceBytes)])
            guard valid(challenge[(8 + nonceBytes)...], secret, "cohort acceptor", nonce, theirs, acceptorRank) else {
                throw .refused("it could not prove the instance secret")
            }
            let rank = Int(Int32(bitPattern: u32(challenge[4..<8])))
            return (mac(secret, "cohort connector", theirs, nonce, le32(Int32(truncatingIfNeeded: self.rank))), rank)
        }
    }

    // MARK: - Acceptor

    /// The acceptor's side as a state machine: feed it what arrives; it says what to send,
    /// when the peer is in, and when to refuse it (with the reason to log).
    public struct Acceptor: Sendable {
        public enum Action: Equatable, Sendable {
            /// Wait for more bytes.
            case needMore
            /// Send these bytes, then wait for more.
            case send([UInt8])
            /// The peer proved the secret: send these bytes; the connection is theirs.
            case accept(peerRank: Int, reply: [UInt8])
            /// Close the connection and log why.
            case refuse(String)
        }

        enum State: Sendable {
            case awaitingHello
            case awaitingProof(peerRank: Int, theirs: [UInt8])
            case finished
        }

        let secret: InstanceSecret
        let rank: Int
        let nonce: [UInt8]
        private var state = State.awaitingHello
        private var buffer: [UInt8] = []

        public init(secret: InstanceSecret, rank: Int, nonce: [UInt8]? = nil) {
            self.secret = secret
            self.rank = rank
            self.nonce = nonce ?? Handshake.nonce()
        }

        /// The rank the peer claimed in its hello, once known.
        public var claimedRank: Int? {
            if case let .awaitingProof(rank, _) = state { rank } else { nil }
        }

        public mutating func receive(_ bytes: some Collection<UInt8>) -> Action {
            buffer += bytes
            switch state {
            case .finished:
                return .refuse("it sent bytes after the handshake ended")
            case .awaitingHello:
                if buffer.count >= 4 && Array(buffer[0..<4]) != helloMagic {
                    state = .finished
                    return .refuse("not the Cohort protocol (first bytes \(buffer.prefix(4).map { String($0, radix: 16) }))")
                }
                if buffer.count >= 8 && u32(buffer[4..<8]) != version {
                    state = .finished
                    return .refuse("protocol version \(u32(buffer[4..<8])), expected \(version)")
                }
                guard buffer.count >= helloBytes else { return .needMore }
                let peerRank = Int(Int32(bitPattern: u32(buffer[8..<12])))
                let theirs = Array(buffer[12..<helloBytes])
                buffer.removeFirst(helloBytes)
                state = .awaitingProof(peerRank: peerRank, theirs: theirs)
                let rankBytes = le32(Int32(truncatingIfNeeded: rank))
                return .send(challengeMagic + rankBytes + nonce + mac(secret, "cohort acceptor", theirs, nonce, rankBytes))
            case let .awaitingProof(peerRank, theirs):
                guard buffer.count >= proofBytes else { return .needMore }
                state = .finished
                guard buffer.count == proofBytes else { return .refuse("it sent \(buffer.count - proofBytes) bytes past its proof") }
                guard valid(buffer[...], secret, "cohort connector", nonce, theirs, le32(Int32(truncatingIfNeeded: peerRank))) else {
                    return .refuse("claiming rank \(peerRank): wrong instance secret (its proof does not match this challenge)")
                }
                return .accept(peerRank: peerRank, reply: okMagic)
            }
        }
    }
}

/// A handshake that failed; the reason is what the other side will be told or logged.
public enum HandshakeError: Error, Equatable, CustomStringConvertible {
    case refused(String)
    public var description: String {
        switch self { case let .refused(reason): reason }
    }
}
