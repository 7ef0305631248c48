"""Exceptions raised by trio-feed."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "FeedError",
    "IllegalTransition",
    "MalformedFrame",
    "SlowConsumer",
]


class FeedError(Exception):
    """Base class of every error trio-feed raises on purpose."""


class ConfigError(FeedError):
    """A configuration is invalid. ``problems`` holds one line per problem, each naming the
    key path (``venues[0].reconnect.base_delay``) or file and what is wrong with it."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class MalformedFrame(FeedError):
    """A frame from the exchange could not be parsed. The reader counts, logs and skips it."""


class IllegalTransition(FeedError):
    """The connection state machine got an input that is not allowed in its current state."""

    def __init__(self, state: str, input_: str) -> None:
        self.state = state
        self.input = input_
        super().__init__(f"illegal transition: input {input_!r} in state {state}")


class SlowConsumer(FeedError):
    """An event subscription fell more than its buffer behind and was closed.

    Only that subscription ends; the feed and every other subscription go on. The events
    buffered before the overflow were all delivered; ``dropped`` counts what was not.
    """

    def __init__(self, max_buffer: int, dropped: int) -> None:
        self.max_buffer = max_buffer
        self.dropped = dropped
        super().__init__(
            f"event subscription fell more than {max_buffer} events behind and was closed "
            f"({dropped} events not delivered); consume faster, raise max_buffer, or open a "
            "new subscription with feed.events()"
        )
