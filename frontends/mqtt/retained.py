"""The retained messages, in a topic trie, so a subscription finds its own.

A new subscription must be sent every retained message its filter matches.
A scan of all retained topics per SUBSCRIBE costs as much with a million
device-state topics as with ten; walking a trie of topic levels by the
filter's levels costs what the filter can match. ``+`` takes every child at
one level, ``#`` a whole subtree (the node itself included: ``a/#`` matches
``a``), and a filter that starts with a wildcard skips topics that start
with ``$``. No I/O here; the broker stores retained messages elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterator

from .messages import Message

__all__ = ["RetainedMessages"]


class _Node:
    __slots__ = ("children", "message")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.message: Message | None = None


class RetainedMessages:
    """Topic -> its retained message, with :meth:`matching` by topic filter."""

    def __init__(self) -> None:
        self._root = _Node()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def get(self, topic: str) -> Message | None:
        node: _Node | None = self._root
        for level in topic.split("/"):
            node = node.children.get(level) if node is not None else None
        return None if node is None else node.message

    def set(self, message: Message) -> None:
        """Retain ``message`` for its topic; an empty payload clears the topic."""
        if not message.payload:
            self.clear(message.topic)
            return
        node = self._root
        for level in message.topic.split("/"):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Node()
            node = child
        if node.message is None:
            self._count += 1
        node.message = message

    def clear(self, topic: str) -> None:
        path = [self._root]
        levels = topic.split("/")
        for level in levels:
            child = path[-1].children.get(level)
            if child is None:
                return
            path.append(child)
        if path[-1].message is None:
            return
        path[-1].message = None
        self._count -= 1
        for level, parent, node in zip(
            reversed(levels), reversed(path[:-1]), reversed(path[1:]), strict=True
        ):
            if node.message is not None or node.children:
                break
            del parent.children[level]  # prune empty branches

    def matching(self, topic_filter: str) -> Iterator[Message]:
        """Every retained message whose topic ``topic_filter`` (valid, not shared) matches."""
        levels = topic_filter.split("/")
        skip_dollar = levels[0] in ("+", "#")
        yield from self._walk(self._root, levels, 0, skip_dollar)

    def _walk(self, node: _Node, levels: list[str], i: int, skip_dollar: bool) -> Iterator[Message]:
        if i == len(levels):
            if node.message is not None:
                yield node.message
            return
        level = levels[i]
        if level == "#":
            yield from self._subtree(node, skip_dollar)
            return
        if level == "+":
            for name, child in node.children.items():
                if not (skip_dollar and name.startswith("$")):
                    yield from self._walk(child, levels, i + 1, False)
            return
        exact = node.children.get(level)
        if exact is not None:
            yield from self._walk(exact, levels, i + 1, False)

    def _subtree(self, node: _Node, skip_dollar: bool) -> Iterator[Message]:
        if node.message is not None:
            yield node.message
        for name, child in node.children.items():
            if not (skip_dollar and name.startswith("$")):
                yield from self._subtree(child, False)

    def __iter__(self) -> Iterator[Message]:
        yield from self._subtree(self._root, False)
