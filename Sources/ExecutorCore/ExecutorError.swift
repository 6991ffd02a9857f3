/// An executor call that cannot proceed; the message names what was expected and found.
public struct ExecutorError: Error, Equatable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
