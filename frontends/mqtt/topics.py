"""Topic names, topic filters, matching and shared subscriptions.

Pure functions over ``str``. A topic *name* (what PUBLISH carries) has no
wildcards; a topic *filter* (what SUBSCRIBE carries) may hold ``+`` as a whole
level and ``#`` as the whole last level. Levels are split on ``/`` and may be
empty. Topics starting with ``$`` (``$SYS/...``) are not matched by a filter
whose first level is a wildcard (spec 4.7.2). ``$share/{group}/{filter}`` is a
shared subscription (MQTT 5.0 section 4.8.2); it is parsed in both protocol
versions, as 3.1.1 brokers commonly accept it too.
"""

from __future__ import annotations

from .errors import InvalidTopicError, ReasonCode

__all__ = [
    "MAX_TOPIC_BYTES",
    "SHARE_PREFIX",
    "matches",
    "parse_shared",
    "validate_topic_filter",
    "validate_topic_name",
]

MAX_TOPIC_BYTES = 65535
SHARE_PREFIX = "$share/"


def _check_string(topic: str, code: ReasonCode) -> None:
    if not topic:
        raise InvalidTopicError("topic is empty", code=code)
    if "\x00" in topic:
        raise InvalidTopicError("topic contains U+0000", code=code)
    try:
        size = len(topic.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidTopicError("topic contains a surrogate", code=code) from None
    if size > MAX_TOPIC_BYTES:
        raise InvalidTopicError(f"topic is {size} bytes, more than 65535", code=code)


def validate_topic_name(topic: str) -> None:
    """Raise :class:`InvalidTopicError` (0x90) unless ``topic`` may be published to."""
    _check_string(topic, ReasonCode.TOPIC_NAME_INVALID)
    if "+" in topic or "#" in topic:
        raise InvalidTopicError(
            f"wildcard in topic name {topic!r}", code=ReasonCode.TOPIC_NAME_INVALID
        )


def _check_filter_levels(topic_filter: str) -> None:
    levels = topic_filter.split("/")
    last = len(levels) - 1
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != last):
            raise InvalidTopicError(
                f"'#' must be the whole last level in {topic_filter!r}",
                code=ReasonCode.TOPIC_FILTER_INVALID,
            )
        if "+" in level and level != "+":
            raise InvalidTopicError(
                f"'+' must be a whole level in {topic_filter!r}",
                code=ReasonCode.TOPIC_FILTER_INVALID,
            )


def validate_topic_filter(topic_filter: str) -> None:
    """Raise :class:`InvalidTopicError` (0x8F) unless ``topic_filter`` may be subscribed to.

    A ``$share/`` filter must name a non-empty group without ``/``, ``+`` or
    ``#``, followed by ``/`` and a valid filter.
    """
    _check_string(topic_filter, ReasonCode.TOPIC_FILTER_INVALID)
    if topic_filter.startswith(SHARE_PREFIX):
        rest = topic_filter[len(SHARE_PREFIX) :]
        group, sep, inner = rest.partition("/")
        if not group or not sep or not inner or "+" in group or "#" in group:
            raise InvalidTopicError(
                f"shared subscription {topic_filter!r} is not $share/{{group}}/{{filter}}",
                code=ReasonCode.TOPIC_FILTER_INVALID,
            )
        _check_filter_levels(inner)
        return
    _check_filter_levels(topic_filter)


def parse_shared(topic_filter: str) -> tuple[str, str] | None:
    """``(group, filter)`` for a valid ``$share/{group}/{filter}``, else None."""
    if not topic_filter.startswith(SHARE_PREFIX):
        return None
    try:
        validate_topic_filter(topic_filter)
    except InvalidTopicError:
        return None
    group, _, inner = topic_filter[len(SHARE_PREFIX) :].partition("/")
    return group, inner


def matches(topic_filter: str, topic: str) -> bool:
    """Whether a (valid, non-shared) filter matches a (valid) topic name.

    ``sport/#`` matches ``sport`` and everything below it; ``+`` matches one
    level, including an empty one; a leading wildcard never matches ``$...``.
    """
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    n = len(t_levels)
    for i, level in enumerate(f_levels):
        if level == "#":
            return True
        if i >= n:
            return False
        if level != "+" and level != t_levels[i]:
            return False
    return len(f_levels) == n
