internal import CKernels

/// Small float vector operations used by the forward pass: dot products, scaled adds,
/// RMS normalisation, softmax, SwiGLU. Each works on raw pointers with `SIMD8<Float>`
/// lanes and a scalar tail.
///
/// Products use `a * b + c`, not `addingProduct`: without `-target-cpu` the fused form is
/// a call to libm's `fmaf` per lane (measured: half of all decode time went there).
public enum VectorMath {
    /// Σ a[i]·b[i] over `count` floats, accumulated in four 8-lane float32 sums.
    @inlinable @inline(__always)
    public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
        let ra = UnsafeRawPointer(a), rb = UnsafeRawPointer(b)
        var s0 = SIMD8<Float>(), s1 = SIMD8<Float>(), s2 = SIMD8<Float>(), s3 = SIMD8<Float>()
        var i = 0
        while i + 32 <= count {
            let o = i * 4
            s0 += ra.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self) *
                          rb.loadUnaligned(fromByteOffset: o, as: SIMD8<Float>.self)
            s1 += ra.loadUnaligned(fromByteOffset: o + 32, as: SIMD8<Float>.self) *
                          rb.loadUnaligned(fromByteOffset: o + 32, as: SIMD8<Float>.self)
            s2 += ra.loadUnaligned(fromByteOffset: o + 64, as: SIMD8<Float>.self) *
                          rb.loadUnaligned(fromByteOffset: o + 64, as: SIMD8<Float>.self)
            s3 += ra.loadUnaligned(fromByteOffset: o + 96, as: SIMD8<Float>.self) *
                          rb.loadUnaligned(fromByteOffset: o + 96, as: SIMD8<Float>.self)
            i += 32
        }
        while i + 8 <= count {
            s0 += ra.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self) *
                          rb.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
            i += 8
        }
        var sum = ((s0 + s1) + (s2 + s3)).sum()
        while i < count {
            sum += a[i] * b[i]
            i += 1
        }
        return sum
    }

    /// y[i] += alpha · x[i].
    @inlinable @inline(__always)
    public static func addScaled(_ x: UnsafePointer<Float>, _ alpha: Float, into y: UnsafeMutablePointer<Float>, count: Int) {
        let rx = UnsafeRawPointer(x), ry = UnsafeMutableRawPointer(y)
        let a = SIMD8<Float>(repeating: alpha)
        var i = 0
        while i + 8 <= count {
            var v = ry.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
            v += a * rx.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
            ry.storeBytes(of: v, toByteOffset: i * 4, as: SIMD8<Float>.self)
            i += 8
        }
        while i < count {
            y[i] += alpha * x[i]
            i += 1
        }
    }

    /// y[i] += x[i].
    @inlinable
    public static func add(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count: Int) {
        addScaled(x, 1, into: y, count: count)
    }

    /// out[i] = x[i] / sqrt(mean(x²) + epsilon) · weight[i] (RMSNorm).
    public static func rmsNorm(
        _ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, epsilon: Float,
        into out: UnsafeMutablePointer<Float>, count: Int
    ) {
        // The sum of squares is taken in double: a few thousand activations lose digits
        // in float32. (In C: Swift keeps a double reduction in one serial chain.)
        cohort_rms_norm(x, weight, epsilon, out, Int32(count))
    }

    /// The first index of the largest of `count` floats (greedy sampling); NaNs never win.
    public static func argmax(_ x: UnsafePointer<Float>, count: Int) -> Int {
        Int(cohort_argmax(x, Int32(count)))
    }

    /// In-place softmax over `count` floats; leaves probabilities (a vectorized exp in
    /// `CKernels`).
    public static func softmax(_ x: UnsafeMutablePointer<Float>, count: Int) {
        cohort_softmax(x, Int32(count))
    }

    /// gate[i] = silu(gate[i]) · up[i] (SwiGLU), in place in `gate`.
    public static func swiglu(_ gate: UnsafeMutablePointer<Float>, up: UnsafePointer<Float>, count: Int) {
        cohort_swiglu(gate, up, Int32(count))
    }
}
