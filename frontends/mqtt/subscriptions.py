"""The subscription index the broker uses for live delivery.

A trie of topic levels: each node has a dict of literal children plus
separate ``+`` and ``#`` child nodes, and holds the subscribers whose filter
ends there. ``match`` walks the topic's levels once, following the literal
child, the ``+`` child and collecting the ``#`` child at each level, so its
cost is O(levels x branching), not O(filters). A ``$...`` topic skips the
root's wildcard children (spec 4.7.2); ``sport/#`` matches ``sport`` because
the ``#`` child of the last node is collected too. Removal prunes nodes left
empty, so memory follows the live subscriptions, not their churn.

``$share/{group}/{filter}`` subscriptions live in a second trie keyed by
``(group, subscriber)``; ``shared_match`` groups them by ``(group, filter)``
so the broker can pick one member per group. Options are opaque.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

from .topics import parse_shared, validate_topic_filter

__all__ = ["SubscriptionIndex"]

S = TypeVar("S", bound=Hashable)
O = TypeVar("O")  # noqa: E741
K = TypeVar("K", bound=Hashable)


class _Node(Generic[K, O]):
    __slots__ = ("children", "filter", "hash", "plus", "subs")

    def __init__(self, topic_filter: str) -> None:
        self.filter = topic_filter  # the filter that ends at this node
        self.children: dict[str, _Node[K, O]] = {}
        self.plus: _Node[K, O] | None = None
        self.hash: _Node[K, O] | None = None
        self.subs: dict[K, O] = {}

    def is_empty(self) -> bool:
        return not (self.subs or self.children or self.plus or self.hash)

    def child(self, level: str) -> _Node[K, O] | None:
        if level == "+":
            return self.plus
        if level == "#":
            return self.hash
        return self.children.get(level)

    def set_child(self, level: str, node: _Node[K, O] | None) -> None:
        if level == "+":
            self.plus = node
        elif level == "#":
            self.hash = node
        elif node is None:
            del self.children[level]
        else:
            self.children[level] = node

    def count(self) -> int:
        below = [*self.children.values(), self.plus, self.hash]
        return sum(1 + n.count() for n in below if n is not None)


class _Trie(Generic[K, O]):
    def __init__(self) -> None:
        self.root: _Node[K, O] = _Node("")

    def add(self, topic_filter: str, key: K, options: O) -> bool:
        node = self.root
        levels = topic_filter.split("/")
        for i, level in enumerate(levels):
            nxt = node.child(level)
            if nxt is None:
                nxt = _Node("/".join(levels[: i + 1]))
                node.set_child(level, nxt)
            node = nxt
        new = key not in node.subs
        node.subs[key] = options
        return new

    def remove(self, topic_filter: str, key: K) -> bool:
        path: list[tuple[_Node[K, O], str]] = []
        node = self.root
        for level in topic_filter.split("/"):
            nxt = node.child(level)
            if nxt is None:
                return False
            path.append((node, level))
            node = nxt
        if key not in node.subs:
            return False
        del node.subs[key]
        for parent, level in reversed(path):
            if not node.is_empty():
                break
            parent.set_child(level, None)
            node = parent
        return True

    def match(self, topic: str) -> Iterator[_Node[K, O]]:
        """Every node whose filter matches ``topic`` and holds subscribers."""
        levels = topic.split("/")
        dollar = topic.startswith("$")
        nodes = [self.root]
        for i, level in enumerate(levels):
            wild = not (i == 0 and dollar)
            nxt: list[_Node[K, O]] = []
            for node in nodes:
                if wild and node.hash is not None:
                    yield node.hash
                if wild and node.plus is not None:
                    nxt.append(node.plus)
                child = node.children.get(level)
                if child is not None:
                    nxt.append(child)
            nodes = nxt
        for node in nodes:
            if node.subs:
                yield node
            if node.hash is not None:
                yield node.hash


class SubscriptionIndex(Generic[S, O]):
    """Which subscribers' filters match a topic; generic in subscriber key and options."""

    def __init__(self) -> None:
        self._plain: _Trie[S, O] = _Trie()
        self._shared: _Trie[tuple[str, S], O] = _Trie()
        self._filters: dict[S, set[str]] = {}
        self._size = 0

    def add(self, topic_filter: str, subscriber: S, options: O) -> bool:
        """Subscribe; True if new, else the options of the pair are replaced.

        Raises :class:`InvalidTopicError` for an invalid filter.
        """
        validate_topic_filter(topic_filter)
        shared = parse_shared(topic_filter)
        if shared is None:
            new = self._plain.add(topic_filter, subscriber, options)
        else:
            group, inner = shared
            new = self._shared.add(inner, (group, subscriber), options)
        if new:
            self._filters.setdefault(subscriber, set()).add(topic_filter)
            self._size += 1
        return new

    def remove(self, topic_filter: str, subscriber: S) -> bool:
        """Unsubscribe; False if the pair was not subscribed."""
        filters = self._filters.get(subscriber)
        if filters is None or topic_filter not in filters:
            return False
        shared = parse_shared(topic_filter)
        if shared is None:
            self._plain.remove(topic_filter, subscriber)
        else:
            group, inner = shared
            self._shared.remove(inner, (group, subscriber))
        filters.discard(topic_filter)
        if not filters:
            del self._filters[subscriber]
        self._size -= 1
        return True

    def remove_all(self, subscriber: S) -> int:
        """Drop every subscription of ``subscriber``; return how many there were."""
        filters = sorted(self._filters.get(subscriber, ()))
        for topic_filter in filters:
            self.remove(topic_filter, subscriber)
        return len(filters)

    def filters_of(self, subscriber: S) -> frozenset[str]:
        """The filters (shared ones in ``$share/...`` form) ``subscriber`` holds."""
        return frozenset(self._filters.get(subscriber, ()))

    def match(self, topic: str) -> dict[S, list[tuple[str, O]]]:
        """Each subscriber with a matching non-shared filter, with every such filter."""
        out: dict[S, list[tuple[str, O]]] = {}
        for node in self._plain.match(topic):
            for subscriber, options in node.subs.items():
                out.setdefault(subscriber, []).append((node.filter, options))
        return out

    def shared_match(self, topic: str) -> dict[tuple[str, str], list[tuple[S, O]]]:
        """Members of each matching ``(group, filter)``; deliver to one per key."""
        out: dict[tuple[str, str], list[tuple[S, O]]] = {}
        for node in self._shared.match(topic):
            for (group, subscriber), options in node.subs.items():
                out.setdefault((group, node.filter), []).append((subscriber, options))
        return out

    def node_count(self) -> int:
        """Trie nodes below the roots (0 when empty); for tests and statistics."""
        return self._plain.root.count() + self._shared.root.count()

    def __len__(self) -> int:
        return self._size
