// The idiomatic Kotlin layer over the generated bindings: Flow adapters for events and the
// connection state. The generated functions are already `suspend`; these adapters turn the
// listener-based subscription into cold Flows that cancel the subscription when collection ends.
package dev.missive

import kotlinx.coroutines.channels.awaitClose
import kotlinx.coroutines.channels.BufferOverflow
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.buffer
import kotlinx.coroutines.flow.callbackFlow
import kotlinx.coroutines.flow.distinctUntilChanged
import kotlinx.coroutines.flow.filterIsInstance
import kotlinx.coroutines.flow.map

/** Every event, starting with the current connection state. Cancelling the collector cancels
 *  the subscription. */
fun MissiveClient.events(): Flow<ClientEvent> = callbackFlow {
    val subscription = subscribe(object : EventListener {
        override fun onEvent(event: ClientEvent) {
            trySend(event)
        }
    })
    awaitClose { subscription.cancel(); subscription.close() }
}.buffer(capacity = 4096, onBufferOverflow = BufferOverflow.SUSPEND)

/** The connection state, starting with the current one, without repeats. */
fun MissiveClient.connectionStates(): Flow<ConnectionState> =
    events().filterIsInstance<ClientEvent.ConnectionChanged>().map { it.state }.distinctUntilChanged()

/** Messages as they are added or change state. */
fun MissiveClient.messageUpdates(): Flow<Message> = events().map {
    when (it) {
        is ClientEvent.MessageAdded -> it.message
        is ClientEvent.MessageUpdated -> it.message
        else -> null
    }
}.filterIsInstance<Message>()

/** The stable error code of any SDK exception. */
val MissiveException.code: ErrorCode
    get() = when (this) {
        is MissiveException.Failed -> this.code
    }

/** Whether retrying the same call may succeed. */
val MissiveException.isRetryable: Boolean
    get() = when (this) {
        is MissiveException.Failed -> this.retryable
    }

/** Settings with fast reconnects, for tests and demos. */
fun clientSettings(serverUrl: String, storePath: String? = null, deviceId: String = "jvm"): ClientSettings =
    defaultSettings(serverUrl).copy(storePath = storePath, deviceId = deviceId)
