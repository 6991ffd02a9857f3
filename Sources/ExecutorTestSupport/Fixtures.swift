public import Foundation

/// Files under `Tests/Fixtures`, made by the scripts in `scripts/fixtures`.
public enum Fixtures {
    public static func url(_ name: String, file: String = #filePath) -> URL {
        // Sources/ExecutorTestSupport/Fixtures.swift → repository root.
        URL(fileURLWithPath: file).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Tests/Fixtures/\(name)")
    }

    public static func json(_ name: String) throws -> Any {
        try JSONSerialization.jsonObject(with: Data(contentsOf: url(name)))
    }

    public static func data(_ name: String) throws -> Data { try Data(contentsOf: url(name)) }
}

/// Float comparisons for tests, NaN-aware: a NaN anywhere (an unwritten output that a test
/// filled with NaN, say) makes the result NaN, so every `<` or `<=` bound fails. (Swift's
/// `max()` keeps its running maximum when compared with NaN: a NaN past the first element
/// would vanish.)
public enum Tolerance {
    /// Largest |a − b|; NaN when any element of either is NaN, infinity when they differ by
    /// an infinity (equal infinities count as equal).
    public static func maxAbsoluteDifference(_ a: [Float], _ b: [Float]) -> Float {
        precondition(a.count == b.count, "lengths differ: \(a.count) vs \(b.count)")
        var worst: Float = 0
        for (x, y) in zip(a, b) {
            if x.isNaN || y.isNaN { return .nan }
            if x == y { continue }  // equal infinities included
            worst = Swift.max(worst, abs(x - y))
        }
        return worst
    }

    /// ‖a − b‖ / ‖b‖ (‖a − b‖ when b is zero); NaN when any element of either is NaN.
    public static func relativeL2(_ a: [Float], _ b: [Float]) -> Double {
        precondition(a.count == b.count, "lengths differ: \(a.count) vs \(b.count)")
        var num = 0.0, den = 0.0
        for (x, y) in zip(a, b) {
            if x.isNaN || y.isNaN { return .nan }
            if x == y { den += Double(y) * Double(y); continue }
            num += Double(x - y) * Double(x - y)
            den += Double(y) * Double(y)
        }
        return den == 0 ? num.squareRoot() : (num / den).squareRoot()
    }
}
