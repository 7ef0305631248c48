"""The connection state machine: every state, every input, every legal transition, in one table.

Modelled on h11's ``_state.py``: the table below is the whole machine. The shell
(:mod:`trio_feed.runtime.connection`) feeds it inputs as things happen and publishes each
transition as a ``state`` event; an input that the table does not allow is a bug in the
shell, so it raises `IllegalTransition` naming the state and the input instead of being
ignored.

::

    DISCONNECTED --connect--> CONNECTING --opened--> CONNECTED --subscribed--> SUBSCRIBED
                                  |                      |                         |
                                  +--------lost----------+-----------lost----------+
                                                         v
           CONNECTING <--connect-- RECONNECTING <--retry-- LOST --give_up--> FAILED

    any state but DISCONNECTED --close--> DISCONNECTED        (the feed is shutting down)
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from attrs import frozen

from ..errors import IllegalTransition

__all__ = ["ConnectionInput", "ConnectionState", "ConnectionStateMachine", "Transition"]


class ConnectionState(enum.Enum):
    """Where one WebSocket connection is in its life."""

    #: Not running: before the first connect and after shutdown.
    DISCONNECTED = "DISCONNECTED"
    #: Opening TCP/TLS and the WebSocket handshake.
    CONNECTING = "CONNECTING"
    #: The WebSocket is open (and the venue's handshake hook, if any, is done);
    #: subscriptions are not all confirmed yet.
    CONNECTED = "CONNECTED"
    #: Every stream the connection owns is subscribed: data flows.
    SUBSCRIBED = "SUBSCRIBED"
    #: The connection broke (closed, missed pong, refused, malformed handshake...).
    LOST = "LOST"
    #: Waiting out the backoff delay before the next attempt.
    RECONNECTING = "RECONNECTING"
    #: Gave up after ``reconnect.max_retries`` failed attempts. Terminal until restarted.
    FAILED = "FAILED"


class ConnectionInput(enum.Enum):
    """What can happen to a connection."""

    CONNECT = "connect"
    OPENED = "opened"
    SUBSCRIBED = "subscribed"
    LOST = "lost"
    RETRY = "retry"
    GIVE_UP = "give_up"
    CLOSE = "close"


S = ConnectionState
I = ConnectionInput  # noqa: E741 - short alias keeps the table readable

#: The whole machine. (state, input) -> next state; anything missing is illegal.
TRANSITIONS: Mapping[tuple[ConnectionState, ConnectionInput], ConnectionState] = {
    (S.DISCONNECTED, I.CONNECT): S.CONNECTING,
    (S.CONNECTING, I.OPENED): S.CONNECTED,
    (S.CONNECTING, I.LOST): S.LOST,
    (S.CONNECTED, I.SUBSCRIBED): S.SUBSCRIBED,
    (S.CONNECTED, I.LOST): S.LOST,
    (S.SUBSCRIBED, I.LOST): S.LOST,
    (S.LOST, I.RETRY): S.RECONNECTING,
    (S.LOST, I.GIVE_UP): S.FAILED,
    (S.RECONNECTING, I.CONNECT): S.CONNECTING,
    # Shutdown may interrupt any phase.
    (S.CONNECTING, I.CLOSE): S.DISCONNECTED,
    (S.CONNECTED, I.CLOSE): S.DISCONNECTED,
    (S.SUBSCRIBED, I.CLOSE): S.DISCONNECTED,
    (S.LOST, I.CLOSE): S.DISCONNECTED,
    (S.RECONNECTING, I.CLOSE): S.DISCONNECTED,
    (S.FAILED, I.CLOSE): S.DISCONNECTED,
}


@frozen(slots=True)
class Transition:
    """One step of the machine."""

    previous: ConnectionState
    state: ConnectionState
    input: ConnectionInput


class ConnectionStateMachine:
    """The state of one connection. Pure: no I/O, no clock."""

    __slots__ = ("state",)

    def __init__(self, state: ConnectionState = ConnectionState.DISCONNECTED) -> None:
        self.state = state

    def can(self, input_: ConnectionInput) -> bool:
        """Whether ``input_`` is legal in the current state."""
        return (self.state, input_) in TRANSITIONS

    def handle(self, input_: ConnectionInput) -> Transition:
        """Apply ``input_``; raise `IllegalTransition` if the table does not allow it."""
        try:
            new = TRANSITIONS[self.state, input_]
        except KeyError:
            raise IllegalTransition(self.state.value, input_.value) from None
        transition = Transition(self.state, new, input_)
        self.state = new
        return transition
