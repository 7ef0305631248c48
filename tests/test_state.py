"""The connection state machine: every legal transition and every illegal one."""

from __future__ import annotations

import itertools

import pytest
from trio_feed.core.state import (
    TRANSITIONS,
    ConnectionInput,
    ConnectionState,
    ConnectionStateMachine,
)
from trio_feed.errors import IllegalTransition

S, I = ConnectionState, ConnectionInput  # noqa: E741 - short aliases keep tables readable

EXPECTED = {
    (S.DISCONNECTED, I.CONNECT): S.CONNECTING,
    (S.CONNECTING, I.OPENED): S.CONNECTED,
    (S.CONNECTING, I.LOST): S.LOST,
    (S.CONNECTED, I.SUBSCRIBED): S.SUBSCRIBED,
    (S.CONNECTED, I.LOST): S.LOST,
    (S.SUBSCRIBED, I.LOST): S.LOST,
    (S.LOST, I.RETRY): S.RECONNECTING,
    (S.LOST, I.GIVE_UP): S.FAILED,
    (S.RECONNECTING, I.CONNECT): S.CONNECTING,
    **{(s, I.CLOSE): S.DISCONNECTED for s in S if s is not S.DISCONNECTED},
}


@pytest.mark.parametrize(("state", "input_"), sorted(EXPECTED, key=str))
def test_every_legal_transition(state: ConnectionState, input_: ConnectionInput) -> None:
    machine = ConnectionStateMachine(state)
    assert machine.can(input_)
    step = machine.handle(input_)
    assert (step.previous, step.state, step.input) == (state, EXPECTED[state, input_], input_)
    assert machine.state is EXPECTED[state, input_]


ILLEGAL = [pair for pair in itertools.product(S, I) if pair not in EXPECTED]


@pytest.mark.parametrize(("state", "input_"), ILLEGAL, ids=str)
def test_every_illegal_transition_names_state_and_input(
    state: ConnectionState, input_: ConnectionInput
) -> None:
    machine = ConnectionStateMachine(state)
    assert not machine.can(input_)
    with pytest.raises(IllegalTransition) as info:
        machine.handle(input_)
    assert info.value.state == state.value
    assert info.value.input == input_.value
    assert state.value in str(info.value) and input_.value in str(info.value)
    assert machine.state is state  # unchanged


def test_table_is_exactly_the_documented_machine() -> None:
    assert dict(TRANSITIONS) == EXPECTED
    assert len(ILLEGAL) == len(S) * len(I) - len(EXPECTED)


def test_a_full_life() -> None:
    machine = ConnectionStateMachine()
    path = [I.CONNECT, I.OPENED, I.SUBSCRIBED, I.LOST, I.RETRY, I.CONNECT, I.LOST, I.GIVE_UP]
    states = [machine.handle(i).state for i in path]
    assert states == [
        S.CONNECTING,
        S.CONNECTED,
        S.SUBSCRIBED,
        S.LOST,
        S.RECONNECTING,
        S.CONNECTING,
        S.LOST,
        S.FAILED,
    ]
    assert machine.handle(I.CLOSE).state is S.DISCONNECTED
