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

/// Float comparisons for tests.
public enum Tolerance {
    /// Largest |a − b|.
    public static func maxAbsoluteDifference(_ a: [Float], _ b: [Float]) -> Float {
        precondition(a.count == b.count, "lengths differ: \(a.count) vs \(b.count)")
        return zip(a, b).map { abs($0 - $1) }.max() ?? 0
    }

    /// ‖a − b‖ / ‖b‖.
    public static func relativeL2(_ a: [Float], _ b: [Float]) -> Double {
        precondition(a.count == b.count, "lengths differ: \(a.count) vs \(b.count)")
        var num = 0.0, den = 0.0
        for (x, y) in zip(a, b) {
            num += Double(x - y) * Double(x - y)
            den += Double(y) * Double(y)
        }
        return den == 0 ? num.squareRoot() : (num / den).squareRoot()
    }
}
