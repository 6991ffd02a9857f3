"""Makes the K-quant Llama-family test file from the reference model, as a user would:
SmolLM2-135M-Instruct (Q4_1) dequantized to an F32 GGUF with the `gguf` package, then
quantized to Q4_K_M by llama.cpp itself (llama-cpp-python's `llama_model_quantize`).

Usage: python3 scripts/make-q4km.py SOURCE OUTPUT
The output (a Q4_K / Q6_K / Q5_0 / Q8_0 / F32 mix, as llama.cpp picks for Q4_K_M) is
deterministic for a given llama.cpp; the caller checks its SHA-256.
"""
import os
import sys
import tempfile

import gguf
import llama_cpp
import numpy as np

source, output = sys.argv[1], sys.argv[2]
reader = gguf.GGUFReader(source)
arch = reader.fields["general.architecture"].contents()

with tempfile.TemporaryDirectory(dir=os.path.dirname(output) or ".") as tmp:
    f32 = os.path.join(tmp, "f32.gguf")
    writer = gguf.GGUFWriter(f32, arch)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name in ("general.architecture", "general.file_type"):
            continue
        kind = field.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(name, field.contents(), kind, sub_type=field.types[-1])
        else:
            writer.add_key_value(name, field.contents(), kind)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    for t in reader.tensors:
        values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        # GGUFReader gives numpy shapes (the reverse of ggml's dimensions).
        writer.add_tensor(t.name, values.reshape([int(d) for d in reversed(t.shape)]))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    params.nthread = 2
    partial = output + ".partial"
    status = llama_cpp.llama_model_quantize(f32.encode(), partial.encode(), params)
    if status != 0:
        sys.exit(f"error: llama_model_quantize returned {status}")
    os.replace(partial, output)
print("wrote", output)
