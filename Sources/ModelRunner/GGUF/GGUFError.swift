/// Why a GGUF file could not be read. Every case names where (byte offset, key or tensor)
/// and what was expected and found.
public enum GGUFError: Error, Equatable, CustomStringConvertible {
    /// The file could not be opened or mapped.
    case unreadable(path: String, reason: String)
    /// The first four bytes are not "GGUF".
    case badMagic(found: [UInt8])
    /// A version other than 2 or 3.
    case unsupportedVersion(found: UInt32)
    /// The file ends inside a field.
    case truncated(offset: Int, needed: Int, fileSize: Int, reading: String)
    /// A length or count read from the file is larger than the bytes that remain.
    case lengthExceedsFile(offset: Int, length: UInt64, remaining: Int, reading: String)
    /// A metadata value type id outside 0…12.
    case invalidValueType(offset: Int, key: String, found: UInt32)
    /// Arrays nested deeper than Cohort accepts.
    case nestingTooDeep(offset: Int, key: String, limit: Int)
    /// A string that is not UTF-8.
    case invalidUTF8(offset: Int, reading: String)
    /// The same metadata key twice.
    case duplicateKey(offset: Int, key: String)
    /// The same tensor name twice.
    case duplicateTensor(offset: Int, name: String)
    /// More dimensions than ggml's four.
    case tooManyDimensions(tensor: String, found: UInt32)
    /// A dimension of zero or one that does not fit a signed 64-bit count.
    case invalidDimension(tensor: String, index: Int, found: UInt64)
    /// The product of dimensions (or the byte size) overflows.
    case sizeOverflow(tensor: String, dimensions: [UInt64])
    /// A tensor element type Cohort has no kernels for.
    case unsupportedTensorType(tensor: String, typeID: UInt32, typeName: String)
    /// The first dimension is not a whole number of blocks of the tensor's type.
    case partialBlock(tensor: String, firstDimension: Int, blockSize: Int)
    /// `general.alignment` is zero or not a power of two.
    case invalidAlignment(found: UInt64)
    /// A tensor's offset is not a multiple of the alignment.
    case misalignedTensor(tensor: String, offset: UInt64, alignment: Int)
    /// A tensor's data does not lie inside the file.
    case tensorOutOfBounds(tensor: String, start: UInt64, byteCount: Int, fileSize: Int)
    /// A required metadata key is missing.
    case missingKey(String)
    /// A metadata value of the wrong type.
    case wrongValueType(key: String, expected: String, found: String)
    /// A metadata value out of its allowed range.
    case invalidValue(key: String, expected: String, found: String)
    /// A required tensor is missing.
    case missingTensor(String)
    /// A tensor with the wrong shape or type for the model.
    case tensorMismatch(tensor: String, expected: String, found: String)
    /// `general.architecture` names a model Cohort does not run.
    case unsupportedArchitecture(found: String, supported: [String])

    public var description: String {
        switch self {
        case let .unreadable(path, reason):
            "cannot read model file \(path): \(reason)"
        case let .badMagic(found):
            "not a GGUF file: expected magic \"GGUF\" (47 47 55 46) at offset 0, found \(found.map { String($0, radix: 16) }.joined(separator: " "))"
        case let .unsupportedVersion(found):
            "unsupported GGUF version at offset 4: expected 2 or 3, found \(found)"
        case let .truncated(offset, needed, fileSize, reading):
            "truncated GGUF file: reading \(reading) at offset \(offset) needs \(needed) bytes, but the file has \(fileSize) bytes"
        case let .lengthExceedsFile(offset, length, remaining, reading):
            "invalid GGUF length at offset \(offset) (\(reading)): found \(length), but only \(remaining) bytes remain"
        case let .invalidValueType(offset, key, found):
            "invalid GGUF value type at offset \(offset) for key '\(key)': expected 0…12, found \(found)"
        case let .nestingTooDeep(offset, key, limit):
            "GGUF arrays nested deeper than \(limit) at offset \(offset) for key '\(key)'"
        case let .invalidUTF8(offset, reading):
            "invalid UTF-8 in GGUF string at offset \(offset) (\(reading))"
        case let .duplicateKey(offset, key):
            "duplicate GGUF metadata key '\(key)' at offset \(offset)"
        case let .duplicateTensor(offset, name):
            "duplicate GGUF tensor '\(name)' at offset \(offset)"
        case let .tooManyDimensions(tensor, found):
            "tensor '\(tensor)': expected at most 4 dimensions, found \(found)"
        case let .invalidDimension(tensor, index, found):
            "tensor '\(tensor)': dimension \(index) must be between 1 and 2^62, found \(found)"
        case let .sizeOverflow(tensor, dimensions):
            "tensor '\(tensor)': size of dimensions \(dimensions) overflows"
        case let .unsupportedTensorType(tensor, typeID, typeName):
            "tensor '\(tensor)' has type \(typeName) (\(typeID)); Cohort supports \(TensorTypeNames.supported)"
        case let .partialBlock(tensor, firstDimension, blockSize):
            "tensor '\(tensor)': first dimension \(firstDimension) is not a multiple of the block size \(blockSize)"
        case let .invalidAlignment(found):
            "general.alignment must be a nonzero power of two, found \(found)"
        case let .misalignedTensor(tensor, offset, alignment):
            "tensor '\(tensor)': data offset \(offset) is not a multiple of the alignment \(alignment)"
        case let .tensorOutOfBounds(tensor, start, byteCount, fileSize):
            "tensor '\(tensor)': data at \(start)..<\(start + UInt64(byteCount)) lies outside the file (\(fileSize) bytes)"
        case let .missingKey(key):
            "GGUF metadata key '\(key)' is missing"
        case let .wrongValueType(key, expected, found):
            "GGUF metadata key '\(key)': expected \(expected), found \(found)"
        case let .invalidValue(key, expected, found):
            "GGUF metadata key '\(key)': expected \(expected), found \(found)"
        case let .missingTensor(name):
            "tensor '\(name)' is missing from the model file"
        case let .tensorMismatch(tensor, expected, found):
            "tensor '\(tensor)': expected \(expected), found \(found)"
        case let .unsupportedArchitecture(found, supported):
            "model architecture '\(found)' is not supported; Cohort runs \(supported.joined(separator: ", "))"
        }
    }
}

/// Names of the supported element types, for messages.
enum TensorTypeNames {
    static let supported: String = {
        let names = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1"]
        return names.joined(separator: ", ")
    }()
}
