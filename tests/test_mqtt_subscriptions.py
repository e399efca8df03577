"""Tests for the MQTT subscription index (``frontends.mqtt.subscriptions``).

* a table of (filter, topic, matches) cases, checked through the trie;
* overlapping filters of one subscriber, option replacement, removal pruning;
* shared subscriptions grouped by (group, filter), and remove_all;
* a hypothesis state machine: random adds and removes over a small alphabet of
  levels; ``match`` and ``shared_match`` equal a brute force over all pairs
  using ``topics.matches``, and emptying the index empties the trie.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from frontends.mqtt import InvalidTopicError, SubscriptionIndex, matches, parse_shared

MATCH_CASES = [
    ("sport/tennis/player1", "sport/tennis/player1", True),
    ("sport/tennis/player1/#", "sport/tennis/player1", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
    ("sport/#", "sport", True),
    ("sport/#", "sports", False),
    ("#", "sport/tennis", True),
    ("#", "/", True),
    ("sport/tennis/+", "sport/tennis/player1", True),
    ("sport/tennis/+", "sport/tennis/player1/ranking", False),
    ("sport/+", "sport", False),
    ("sport/+", "sport/", True),
    ("+/+", "/finance", True),
    ("/+", "/finance", True),
    ("+", "/finance", False),
    ("+", "a", True),
    ("a//b", "a//b", True),
    ("a/+/b", "a//b", True),
    ("a/b", "a//b", False),
    ("/", "/", True),
    ("+/+", "/", True),
    ("#", "$SYS/uptime", False),
    ("+/uptime", "$SYS/uptime", False),
    ("+", "$SYS", False),
    ("$SYS/#", "$SYS/uptime", True),
    ("$SYS/+", "$SYS/uptime", True),
    ("$SYS/#", "$SYS", True),
    ("a/$x", "a/$x", True),
    ("a/+", "a/$x", True),
    ("a/#", "a/$x/y", True),
]


@pytest.mark.parametrize(("topic_filter", "topic", "expected"), MATCH_CASES)
def test_match_table(topic_filter: str, topic: str, expected: bool) -> None:
    assert matches(topic_filter, topic) is expected  # the table agrees with topics
    index: SubscriptionIndex[str, int] = SubscriptionIndex()
    assert index.add(topic_filter, "c", 1)
    assert index.add("unrelated/x", "d", 2)
    expected_result = {"c": [(topic_filter, 1)]} if expected else {}
    assert index.match(topic) == expected_result
    assert index.shared_match(topic) == {}


def test_overlapping_filters_give_one_entry_per_subscriber() -> None:
    index: SubscriptionIndex[str, int] = SubscriptionIndex()
    for topic_filter, qos in [("a/b", 0), ("a/+", 1), ("#", 2), ("a/#", 1), ("x", 0)]:
        assert index.add(topic_filter, "c", qos)
    index.add("a/+", "d", 2)
    result = index.match("a/b")
    assert sorted(result["c"]) == [("#", 2), ("a/#", 1), ("a/+", 1), ("a/b", 0)]
    assert result["d"] == [("a/+", 2)]
    assert set(result) == {"c", "d"}


def test_add_replaces_options_and_len_counts_pairs() -> None:
    index: SubscriptionIndex[int, str] = SubscriptionIndex()
    assert index.add("a/+", 1, "old")
    assert not index.add("a/+", 1, "new")
    assert index.add("a/+", 2, "x")
    assert index.add("$share/g/a/+", 1, "s")
    assert len(index) == 3
    assert index.match("a/b") == {1: [("a/+", "new")], 2: [("a/+", "x")]}
    assert index.filters_of(1) == {"a/+", "$share/g/a/+"}
    assert index.filters_of(3) == frozenset()


def test_remove_and_pruning() -> None:
    index: SubscriptionIndex[str, None] = SubscriptionIndex()
    index.add("a/b/c", "x", None)
    index.add("a/b", "x", None)
    index.add("a/+/#", "y", None)
    assert not index.remove("a/b/c", "y")
    assert not index.remove("a/b/d", "x")
    assert not index.remove("zzz", "x")
    assert index.remove("a/b/c", "x")
    assert not index.remove("a/b/c", "x")
    assert index.node_count() == 4  # a, a/b, a/+, a/+/#
    assert index.match("a/b/c") == {"y": [("a/+/#", None)]}
    assert index.remove("a/+/#", "y")
    assert index.node_count() == 2
    assert index.remove("a/b", "x")
    assert index.node_count() == 0
    assert len(index) == 0


def test_invalid_filter_is_rejected() -> None:
    index: SubscriptionIndex[str, None] = SubscriptionIndex()
    for bad in ["a/#/b", "a+", "", "$share/g", "$share//a", "$share/g+/a"]:
        with pytest.raises(InvalidTopicError):
            index.add(bad, "c", None)
    assert len(index) == 0
    assert index.node_count() == 0


def test_shared_subscriptions_grouped() -> None:
    index: SubscriptionIndex[str, int] = SubscriptionIndex()
    index.add("$share/g1/a/+", "c1", 1)
    index.add("$share/g1/a/+", "c2", 2)
    index.add("$share/g1/a/#", "c3", 0)
    index.add("$share/g2/a/+", "c1", 0)
    index.add("$share/g2/b", "c4", 0)
    index.add("a/+", "c5", 1)
    result = index.shared_match("a/x")
    assert set(result) == {("g1", "a/+"), ("g1", "a/#"), ("g2", "a/+")}
    assert sorted(result[("g1", "a/+")]) == [("c1", 1), ("c2", 2)]
    assert result[("g1", "a/#")] == [("c3", 0)]
    assert result[("g2", "a/+")] == [("c1", 0)]
    assert index.match("a/x") == {"c5": [("a/+", 1)]}  # shared ones kept apart
    assert index.shared_match("b") == {("g2", "b"): [("c4", 0)]}
    assert index.remove("$share/g1/a/+", "c2")
    assert index.shared_match("a/x")[("g1", "a/+")] == [("c1", 1)]


def test_shared_dollar_rule() -> None:
    index: SubscriptionIndex[str, int] = SubscriptionIndex()
    index.add("$share/g/#", "c", 0)
    index.add("$share/g/$SYS/#", "c", 1)
    assert index.shared_match("$SYS/x") == {("g", "$SYS/#"): [("c", 1)]}


def test_remove_all() -> None:
    index: SubscriptionIndex[str, int] = SubscriptionIndex()
    for topic_filter in ["a", "a/#", "+/b", "$share/g/a"]:
        index.add(topic_filter, "gone", 0)
    index.add("a", "stays", 1)
    assert index.remove_all("gone") == 4
    assert index.remove_all("gone") == 0
    assert index.filters_of("gone") == frozenset()
    assert len(index) == 1
    assert index.match("a") == {"stays": [("a", 1)]}
    assert index.shared_match("a") == {}
    assert index.node_count() == 1


# --- a state machine against a brute force over all pairs ---

_LEVELS = ["a", "b", "$sys", "", "+", "#"]
_TOPIC_LEVELS = ["a", "b", "$sys", ""]


@st.composite
def _filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(st.sampled_from(_LEVELS), min_size=1, max_size=4))
    levels = [lv for i, lv in enumerate(levels) if lv != "#" or i == len(levels) - 1]
    topic_filter = "/".join(levels) or "#"
    if draw(st.booleans()) and draw(st.booleans()):
        topic_filter = f"$share/{draw(st.sampled_from(['g', 'h']))}/{topic_filter}"
    return topic_filter


_topics = (
    st.lists(st.sampled_from(_TOPIC_LEVELS), min_size=1, max_size=4).map("/".join).filter(bool)
)


class IndexMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.index: SubscriptionIndex[int, int] = SubscriptionIndex()
        self.model: dict[tuple[str, int], int] = {}

    @rule(topic_filter=_filters(), subscriber=st.integers(0, 3), options=st.integers(0, 2))
    def add(self, topic_filter: str, subscriber: int, options: int) -> None:
        new = (topic_filter, subscriber) not in self.model
        assert self.index.add(topic_filter, subscriber, options) is new
        self.model[(topic_filter, subscriber)] = options

    @rule(topic_filter=_filters(), subscriber=st.integers(0, 3))
    def remove(self, topic_filter: str, subscriber: int) -> None:
        present = self.model.pop((topic_filter, subscriber), None) is not None
        assert self.index.remove(topic_filter, subscriber) is present

    @rule(data=st.data())
    def remove_existing(self, data: st.DataObject) -> None:
        if self.model:
            topic_filter, subscriber = data.draw(st.sampled_from(sorted(self.model)))
            del self.model[(topic_filter, subscriber)]
            assert self.index.remove(topic_filter, subscriber)

    @rule(subscriber=st.integers(0, 3))
    def remove_all(self, subscriber: int) -> None:
        mine = [key for key in self.model if key[1] == subscriber]
        for key in mine:
            del self.model[key]
        assert self.index.remove_all(subscriber) == len(mine)

    @rule(topic=_topics)
    def match(self, topic: str) -> None:
        plain: dict[int, list[tuple[str, int]]] = {}
        shared: dict[tuple[str, str], list[tuple[int, int]]] = {}
        for (topic_filter, subscriber), options in self.model.items():
            parsed = parse_shared(topic_filter)
            inner = topic_filter if parsed is None else parsed[1]
            if not matches(inner, topic):
                continue
            if parsed is None:
                plain.setdefault(subscriber, []).append((topic_filter, options))
            else:
                shared.setdefault(parsed, []).append((subscriber, options))
        got = self.index.match(topic)
        assert {k: sorted(v) for k, v in got.items()} == {k: sorted(v) for k, v in plain.items()}
        got_shared = self.index.shared_match(topic)
        assert {k: sorted(v) for k, v in got_shared.items()} == {
            k: sorted(v) for k, v in shared.items()
        }

    @invariant()
    def sizes_agree(self) -> None:
        assert len(self.index) == len(self.model)
        for subscriber in range(4):
            expected = {f for f, s in self.model if s == subscriber}
            assert self.index.filters_of(subscriber) == expected
        if not self.model:
            assert self.index.node_count() == 0


IndexMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestIndexMachine = IndexMachine.TestCase


# -- the retained-message trie ---------------------------------------------------------

_levels_r = st.sampled_from(["a", "b", "", "$sys", "x y"])
_topics_r = (
    st.lists(_levels_r, min_size=1, max_size=4)
    .map("/".join)
    .filter(lambda t: bool(t) and not t.startswith("$share/"))
)
_filters_r = (
    st.lists(st.sampled_from(["a", "b", "", "$sys", "+"]), min_size=0, max_size=3)
    .flatmap(lambda head: st.sampled_from([head, [*head, "#"]]))
    .map("/".join)
    .filter(bool)
)


@given(
    changes=st.lists(st.tuples(_topics_r, st.booleans()), max_size=30),
    topic_filter=_filters_r,
)
def test_retained_matching_agrees_with_a_scan(
    changes: list[tuple[str, bool]], topic_filter: str
) -> None:
    """The trie finds exactly what matching every retained topic would find."""
    from frontends.mqtt.messages import Message
    from frontends.mqtt.retained import RetainedMessages

    retained = RetainedMessages()
    model: dict[str, Message] = {}
    for i, (topic, keep) in enumerate(changes):
        message = Message(topic, str(i).encode() if keep else b"", retain=True)
        retained.set(message)
        if keep:
            model[topic] = message
        else:
            model.pop(topic, None)
    assert len(retained) == len(model)
    assert sorted(m.topic for m in retained) == sorted(model)
    assert all(retained.get(t) == m for t, m in model.items())
    found = sorted(m.topic for m in retained.matching(topic_filter))
    assert found == sorted(t for t in model if matches(topic_filter, t))
    for topic in list(model):  # clearing everything leaves an empty trie
        retained.clear(topic)
    assert len(retained) == 0
    assert retained._root.children == {}
