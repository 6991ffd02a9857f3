import Engine
import Executor
import Hummingbird
import ModelRunner
import NIOCore
import ServingAPI

/// vLLM's `POST /tokenize` and `POST /detokenize`.
extension OpenAIServer {
    struct TokenizeAnswer: Encodable {
        let tokens: [Int32]
        let count: Int
        let max_model_len: Int
    }

    struct DetokenizeAnswer: Encodable {
        let prompt: String
    }

    func tokenize(_ request: Request) async -> Response {
        var request = request
        switch await body(of: &request) {
        case let .failure(error): return self.error(error)
        case let .success(bytes):
            do {
                let tokens = try engine.tokens(for: try TokenizeRequest.decode(bytes.readableBytesView))
                return json(TokenizeAnswer(tokens: tokens, count: tokens.count, max_model_len: engine.contextLimit))
            } catch let error as RequestError {
                return self.error(error)
            } catch {
                return self.error(Self.requestError(error as? GenerationError ?? GenerationError("\(error)")))
            }
        }
    }

    func detokenize(_ request: Request) async -> Response {
        var request = request
        switch await body(of: &request) {
        case let .failure(error): return self.error(error)
        case let .success(bytes):
            do {
                let ids = try TokenizeRequest.decodeTokens(bytes.readableBytesView)
                let tokenizer = engine.tokenizer
                if let bad = ids.first(where: { Int($0) >= tokenizer.vocabularySize }) {
                    return self.error(.invalid("tokens", expected: "ids in 0..<\(tokenizer.vocabularySize)", found: "\(bad)"))
                }
                return json(DetokenizeAnswer(prompt: tokenizer.decode(ids, renderSpecial: true)))
            } catch {
                return self.error(error)
            }
        }
    }
}
