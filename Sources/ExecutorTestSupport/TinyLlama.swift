import ModelRunner
public import Kernels

/// A tiny Llama model with random weights and a byte-level vocabulary, for tests.
public struct TinyLlama {
    public var layers = 2
    public var hiddenSize = 64
    public var feedForwardSize = 96
    public var attentionHeads = 4
    public var kvHeads = 2
    public var contextLength = 256
    /// Type of the projection matrices.
    public var matrixType: TensorType = .q4_1
    public var embeddingType: TensorType = .q8_0
    public var tiedOutput = true
    public var seed: UInt64 = 1
    /// `llama`, `qwen2` (adds Q/K/V biases) or `qwen3` (adds per-head Q/K norms).
    public var architecture = "llama"
    /// Written as `attention.key_length` when set (heads wider than hidden / heads).
    public var headDimensions: Int?
    /// Written as `rope_freqs.weight` when set (Llama 3.1's frequency divisors).
    public var ropeFactors: [Float]?

    public init() {}

    /// 256 byte tokens, then a few merges and three control tokens.
    public static let extraTokens = ["Ġt", "he", "Ġthe", "<|im_start|>", "<|im_end|>", "<|endoftext|>"]
    public var vocabularySize: Int { 256 + Self.extraTokens.count }

    public func writer() -> GGUFWriter {
        var w = GGUFWriter()
        var random = RandomStream(seed: seed)
        func values(_ n: Int, scale: Float) -> [Float] {
            (0..<n).map { _ in Float(random.unit() * 2 - 1) * scale }
        }
        let a = architecture
        w.set("general.architecture", .string(a))
        w.set("\(a).block_count", .uint32(UInt32(layers)))
        w.set("\(a).embedding_length", .uint32(UInt32(hiddenSize)))
        w.set("\(a).feed_forward_length", .uint32(UInt32(feedForwardSize)))
        w.set("\(a).attention.head_count", .uint32(UInt32(attentionHeads)))
        w.set("\(a).attention.head_count_kv", .uint32(UInt32(kvHeads)))
        if let headDimensions { w.set("\(a).attention.key_length", .uint32(UInt32(headDimensions))) }
        w.set("\(a).context_length", .uint32(UInt32(contextLength)))
        w.set("\(a).rope.freq_base", .float32(10_000))
        w.set("\(a).attention.layer_norm_rms_epsilon", .float32(1e-5))
        w.set("tokenizer.ggml.model", .string("gpt2"))
        w.set("tokenizer.ggml.pre", .string("smollm"))
        var tokens: [GGUFValue] = (0..<256).map { .string(String(Character(ByteLevelTable.scalar(UInt8($0))))) }
        tokens += Self.extraTokens.map { .string($0) }
        w.set("tokenizer.ggml.tokens", .array(tokens))
        let types: [GGUFValue] = (0..<vocabularySize).map { i in .int32(i >= 256 + 3 ? 3 : 1) }
        w.set("tokenizer.ggml.token_type", .array(types))
        w.set("tokenizer.ggml.merges", .array([.string("Ġ t"), .string("h e"), .string("Ġt he")]))
        w.set("tokenizer.ggml.eos_token_id", .uint32(UInt32(256 + 5)))
        w.set("tokenizer.ggml.add_bos_token", .bool(false))
        w.set("tokenizer.chat_template", .string(
            "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"))

        let D = hiddenSize, hd = headDimensions ?? hiddenSize / attentionHeads, F = feedForwardSize
        let Q = attentionHeads * hd, KV = kvHeads * hd
        w.add("token_embd.weight", dimensions: [D, vocabularySize], type: embeddingType, values: values(D * vocabularySize, scale: 1))
        if let ropeFactors { w.add("rope_freqs.weight", dimensions: [ropeFactors.count], type: .f32, values: ropeFactors) }
        for l in 0..<layers {
            let s: Float = 1 / Float(D).squareRoot()
            w.add("blk.\(l).attn_norm.weight", dimensions: [D], type: .f32, values: values(D, scale: 0.2).map { 1 + $0 })
            w.add("blk.\(l).attn_q.weight", dimensions: [D, Q], type: matrixType, values: values(D * Q, scale: s * 2))
            w.add("blk.\(l).attn_k.weight", dimensions: [D, KV], type: matrixType, values: values(D * KV, scale: s * 2))
            w.add("blk.\(l).attn_v.weight", dimensions: [D, KV], type: matrixType, values: values(D * KV, scale: s))
            if a == "qwen2" {
                w.add("blk.\(l).attn_q.bias", dimensions: [Q], type: .f32, values: values(Q, scale: 0.5))
                w.add("blk.\(l).attn_k.bias", dimensions: [KV], type: .f32, values: values(KV, scale: 0.5))
                w.add("blk.\(l).attn_v.bias", dimensions: [KV], type: .f32, values: values(KV, scale: 0.5))
            }
            if a == "qwen3" {
                w.add("blk.\(l).attn_q_norm.weight", dimensions: [hd], type: .f32, values: values(hd, scale: 0.2).map { 1 + $0 })
                w.add("blk.\(l).attn_k_norm.weight", dimensions: [hd], type: .f32, values: values(hd, scale: 0.2).map { 1 + $0 })
            }
            w.add("blk.\(l).attn_output.weight", dimensions: [Q, D], type: matrixType, values: values(Q * D, scale: s))
            w.add("blk.\(l).ffn_norm.weight", dimensions: [D], type: .f32, values: values(D, scale: 0.2).map { 1 + $0 })
            w.add("blk.\(l).ffn_gate.weight", dimensions: [D, F], type: matrixType, values: values(D * F, scale: s))
            w.add("blk.\(l).ffn_up.weight", dimensions: [D, F], type: matrixType, values: values(D * F, scale: s))
            w.add("blk.\(l).ffn_down.weight", dimensions: [F, D], type: matrixType, values: values(F * D, scale: 1 / Float(F).squareRoot()))
        }
        w.add("output_norm.weight", dimensions: [D], type: .f32, values: values(D, scale: 0.2).map { 1 + $0 })
        if !tiedOutput {
            w.add("output.weight", dimensions: [D, vocabularySize], type: matrixType, values: values(D * vocabularySize, scale: 0.5))
        }
        return w
    }

    public func write() throws -> String { try writer().write(named: "tiny-llama") }
}

/// GPT-2's byte-to-scalar table, duplicated here on purpose: test fixtures must not lean on
/// the code they test.
public enum ByteLevelTable {
    public static func scalar(_ byte: UInt8) -> Unicode.Scalar {
        let b = Int(byte)
        let printable = (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b)
        if printable { return Unicode.Scalar(UInt32(b))! }
        var n: UInt32 = 256
        for i in 0..<b {
            let p = (33...126).contains(i) || (161...172).contains(i) || (174...255).contains(i)
            if !p { n += 1 }
        }
        return Unicode.Scalar(n)!
    }
}
