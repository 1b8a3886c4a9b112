// The idiomatic Swift layer over the generated bindings: AsyncStream adapters for events and the
// connection state. The generated methods are already `async throws`; these adapters turn the
// listener-based subscription into streams that cancel the subscription when iteration ends.
import Foundation

final class StreamListener: EventListener, @unchecked Sendable {
    private let continuation: AsyncStream<ClientEvent>.Continuation

    init(_ continuation: AsyncStream<ClientEvent>.Continuation) {
        self.continuation = continuation
    }

    func onEvent(event: ClientEvent) {
        continuation.yield(event)
    }
}

extension MissiveClient {
    /// Every event, starting with the current connection state. Ending the iteration (or
    /// cancelling its task) cancels the subscription.
    public func events() -> AsyncStream<ClientEvent> {
        AsyncStream(bufferingPolicy: .bufferingNewest(4096)) { continuation in
            let subscription = self.subscribe(listener: StreamListener(continuation))
            continuation.onTermination = { _ in subscription.cancel() }
        }
    }

    /// The connection state, starting with the current one.
    public func connectionStates() -> AsyncStream<ConnectionState> {
        let events = self.events()
        return AsyncStream { continuation in
            let task = Task {
                for await event in events {
                    if case let .connectionChanged(state) = event {
                        continuation.yield(state)
                    }
                }
                continuation.finish()
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }
}

extension MissiveError {
    /// The stable error code.
    public var code: ErrorCode {
        switch self {
        case let .Failed(code, _, _): return code
        }
    }

    /// Whether retrying the same call may succeed.
    public var isRetryable: Bool {
        switch self {
        case let .Failed(_, _, retryable): return retryable
        }
    }
}
