"""Pure parts of the MQTT broker: the message record form, the session store's
encodings, the forwarding encoder, packet-id allocation."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from frontends.mqtt import (
    MQTT_3_1_1,
    MQTT_5,
    Connect,
    Message,
    MqttProtocolError,
    PacketType,
    Properties,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    encode,
)
from frontends.mqtt.codec import encode_ack, encode_properties, encode_publish
from frontends.mqtt.messages import message_from_record, message_to_record
from frontends.mqtt.sessions import Session
from frontends.mqtt.store import SessionStore, StoredDelivery
from journal.segments.batch import decode_batch, encode_batch

_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=20)
_topics = (
    st.lists(_text.filter(lambda s: "+" not in s and "#" not in s), min_size=1, max_size=4)
    .map("/".join)
    .filter(bool)
)

_properties = st.builds(
    Properties,
    payload_format_indicator=st.none() | st.sampled_from([0, 1]),
    content_type=st.none() | _text,
    response_topic=st.none() | _topics,
    correlation_data=st.none() | st.binary(max_size=20),
    user_properties=st.lists(st.tuples(_text, _text), max_size=4).map(tuple),
)

_messages = st.builds(
    Message,
    topic=_topics,
    payload=st.binary(max_size=300),
    qos=st.sampled_from([0, 1, 2]),
    retain=st.booleans(),
    properties=_properties,
    expiry_at=st.none() | st.integers(0, (1 << 63) - 1),
    origin=_text,
)


@given(_messages)
def test_a_message_survives_the_journal_record_form(message: Message) -> None:
    record = message_to_record(message)
    # through the real batch codec, as the shard streams store it
    _, (back,) = decode_batch(encode_batch([record], now_ms=1))
    if message.qos == 0 and not message.retain:  # never routed again: no publisher kept
        message = replace(message, origin="")
    assert message_from_record(back) == message


def test_a_plain_qos0_message_costs_no_header_bytes() -> None:
    record = message_to_record(Message("a/b", b"x"))
    assert record.headers == []
    assert record.key == b"a/b"
    assert record.value == b"x"


def test_a_record_without_a_topic_is_refused() -> None:
    from journal.records import Record

    with pytest.raises(ValueError, match="no topic"):
        message_from_record(Record(value=b"x", key=None, offset=3))


def test_expiry_is_rounded_up_and_never_negative() -> None:
    message = Message("t", expiry_at=10_500)
    assert message.remaining_expiry(10_000) == 1
    assert message.remaining_expiry(9_000) == 2
    assert message.remaining_expiry(10_499) == 1
    assert message.remaining_expiry(11_000) == 0
    assert not message.expired(10_499)
    assert message.expired(10_500)
    assert Message("t").remaining_expiry(0) is None


@given(
    topic=_topics,
    payload=st.binary(max_size=400),
    qos=st.sampled_from([0, 1, 2]),
    retain=st.booleans(),
    dup=st.booleans(),
    packet_id=st.integers(1, 65535),
    properties=_properties,
    version=st.sampled_from([MQTT_3_1_1, MQTT_5]),
)
def test_the_forwarding_encoder_matches_encode(
    topic: str,
    payload: bytes,
    qos: int,
    retain: bool,
    dup: bool,
    packet_id: int,
    properties: Properties,
    version: int,
) -> None:
    dup = dup and qos > 0
    props = properties if version == MQTT_5 else Properties()
    if props.payload_format_indicator == 1:  # the codec checks such payloads are UTF-8
        payload = payload.decode("utf-8", "replace").encode()
    expected = encode(
        Publish(topic, payload, qos, retain, dup, packet_id if qos else None, props), version
    )
    block = encode_properties(props) if version == MQTT_5 else None
    assert encode_publish(topic.encode(), payload, qos, retain, dup, packet_id, block) == expected


@given(
    packet_type=st.sampled_from([Puback, Pubrec, Pubrel, Pubcomp]),
    packet_id=st.integers(1, 65535),
    version=st.sampled_from([MQTT_3_1_1, MQTT_5]),
)
def test_the_short_ack_encoder_matches_encode(
    packet_type: type[Puback | Pubrec | Pubrel | Pubcomp], packet_id: int, version: int
) -> None:
    assert encode_ack(packet_type.TYPE, packet_id) == encode(packet_type(packet_id), version)


def test_packet_ids_skip_those_in_flight_and_wrap() -> None:
    session = Session("c", MQTT_5)
    assert [session.allocate_packet_id() for _ in range(3)] == [1, 2, 3]
    session.inflight = dict.fromkeys([4, 5], None)  # type: ignore[assignment]
    assert session.allocate_packet_id() == 6
    session._next_pid = 65535
    session.inflight = {65535: None, 1: None}  # type: ignore[dict-item]
    assert session.allocate_packet_id() == 2


_deliveries = st.builds(
    StoredDelivery,
    seq=st.integers(1, (1 << 64) - 1),
    shard=st.integers(0, 1023),
    offset=st.integers(0, (1 << 63) - 1),
    qos=st.sampled_from([1, 2]),
    retain=st.booleans(),
    packet_id=st.integers(0, 65535),
    state=st.sampled_from([0, 1, 2]),
    subscription_ids=st.lists(st.integers(1, 268_435_455), max_size=3).map(tuple),
)


@settings(deadline=None, max_examples=50)  # each example opens RocksDB twice
@given(
    client_id=_text.filter(bool),
    deliveries=st.lists(_deliveries, max_size=5, unique_by=lambda d: d.seq),
    inbound=st.sets(st.integers(1, 65535), max_size=5),
)
def test_the_session_store_gives_back_what_it_was_given(
    tmp_path_factory: pytest.TempPathFactory,
    client_id: str,
    deliveries: list[StoredDelivery],
    inbound: set[int],
) -> None:
    path = tmp_path_factory.mktemp("sessions")
    with SessionStore.open(path) as store:
        store.put_session(client_id, {"version": 5, "expiry": 7, "subs": {}})
        store.put_session(client_id + "x", {"version": 4, "expiry": 1, "subs": {}})
        batch = store.batch()
        for d in deliveries:
            store.put_delivery(batch, client_id, d)
        for pid in inbound:
            store.put_inbound(batch, client_id, pid)
        store.put_routed(batch, 3, 12345)
        store.write(batch)
    with SessionStore.open(path) as store:
        sessions = store.sessions()
        assert store.routed(3) == 12345
        assert store.routed(4) == 0
    got = sessions[client_id]
    assert got.doc == {"version": 5, "expiry": 7, "subs": {}}
    assert got.deliveries == sorted(deliveries, key=lambda d: d.seq)
    assert got.inbound == inbound
    assert sessions[client_id + "x"].deliveries == []  # a prefix of another id is not mixed in


def test_deleting_a_session_removes_its_deliveries_and_ids(tmp_path: Path) -> None:
    with SessionStore.open(tmp_path) as store:
        for cid in ("a", "ab"):
            store.put_session(cid, {"version": 5, "expiry": 1, "subs": {}})
            batch = store.batch()
            store.put_delivery(batch, cid, StoredDelivery(1, 0, 5, 1, False, 0, 0, ()))
            store.put_inbound(batch, cid, 9)
            store.write(batch)
        store.delete_session("a")
        sessions = store.sessions()
    assert set(sessions) == {"ab"}
    assert len(sessions["ab"].deliveries) == 1
    assert sessions["ab"].inbound == {9}


def test_retained_messages_are_kept_and_cleared(tmp_path: Path) -> None:
    kept = Message("a/b", b"v", qos=1, retain=True, properties=Properties(content_type="t"))
    with SessionStore.open(tmp_path) as store:
        batch = store.batch()
        store.put_retained(batch, kept)
        store.put_retained(batch, Message("a/c", b"gone", retain=True))
        store.put_retained(batch, Message("a/c", b"", retain=True))  # clears
        store.write(batch)
    with SessionStore.open(tmp_path) as store:
        assert store.retained() == {"a/b": kept}


def test_a_store_in_use_is_refused(tmp_path: Path) -> None:
    from journal.errors import StorageError

    with SessionStore.open(tmp_path), pytest.raises(StorageError, match="another process"):
        SessionStore.open(tmp_path)


async def test_the_shard_count_cannot_change_under_existing_data(tmp_path: Path) -> None:
    from frontends.mqtt import Broker, BrokerSettings
    from journal import Journal
    from journal.errors import StorageError

    async with Journal.open(tmp_path / "journal") as journal:
        with SessionStore.open(tmp_path / "mqtt") as store:
            assert store.shards(4) == 4
            assert store.shards(8) == 4  # the first answer sticks
            broker = Broker(journal, store, settings=BrokerSettings(shards=8))
            with pytest.raises(StorageError, match=r"set mqtt\.shards = 4"):
                await broker.run()


@given(
    topic=st.binary(max_size=12) | _topics.map(str.encode),
    length_delta=st.sampled_from([0, 0, 0, 1, -1, 50]),
    packet_id=st.binary(min_size=0, max_size=2),
    props=st.sampled_from([b"", b"\x00", b"\x02\x01\x01", b"\x01"]),
    payload=st.binary(max_size=20),
    flags=st.integers(0, 15).filter(lambda f: f & 0x06 != 0x06),
    version=st.sampled_from([MQTT_3_1_1, MQTT_5]),
)
def test_the_fast_publish_decoder_agrees_with_the_generic_one(
    topic: bytes,
    length_delta: int,
    packet_id: bytes,
    props: bytes,
    payload: bytes,
    flags: int,
    version: int,
) -> None:
    """Whatever the fast path accepts, the generic decoder decodes the same and accepts."""
    from frontends.mqtt import codec

    n = max(0, min(65535, len(topic) + length_delta))
    body = bytearray(bytes((n >> 8, n & 0xFF)) + topic + packet_id + props + payload)
    fast = codec._fast_publish(body, 0, len(body), flags, version)
    if fast is None:
        return  # left to the generic path, whose own tests cover it
    cur = codec._Cursor(memoryview(body), 0, len(body))
    generic = codec._DECODERS[PacketType.PUBLISH](cur, flags, version)
    assert cur.pos == len(body)
    codec._validate(generic, version, MqttProtocolError)
    assert fast == generic


@pytest.mark.parametrize("version", [MQTT_3_1_1, MQTT_5])
def test_a_server_reader_takes_the_fast_paths(
    version: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from frontends.mqtt import PacketReader, codec

    reader = PacketReader()
    reader.receive_data(encode(Connect("c"), version))
    assert isinstance(reader.next_packet(), Connect)
    monkeypatch.setattr(codec, "_DECODERS", {})  # the generic path would fail now
    reader.receive_data(encode(Publish("a/b", b"x", qos=1, packet_id=7), version))
    assert reader.next_packet() == Publish("a/b", b"x", qos=1, packet_id=7)
    for ack in (Puback(1), Pubrec(2), Pubrel(3), Pubcomp(65535)):
        reader.receive_data(encode(ack, version))
        assert reader.next_packet() == ack


async def test_a_shard_with_too_much_queued_makes_publishers_wait(tmp_path: Path) -> None:
    """Back-pressure instead of memory: beyond MAX_PENDING_BYTES, submit() waits."""
    from trio.testing import wait_all_tasks_blocked

    from frontends.mqtt.store import MAX_PENDING_BYTES, ShardLog, Submission
    from journal import Journal

    stored: list[int] = []
    payload = b"x" * (1 << 20)
    async with Journal.open(tmp_path) as journal:
        log = ShardLog(journal, 1, lambda shard, base, entries: stored.append(len(entries)))
        await log.create_streams()
        big = [Submission(Message("t", payload, qos=1)) for _ in range(MAX_PENDING_BYTES >> 20)]
        await log.submit(big)  # fits: the writer is not running, nothing is appended yet
        blocked = trio.Event()
        receipts = []

        async def publisher() -> None:
            await log.submit(big[:1])  # over the limit now: parks
            receipts.append(await log.submit(big[:1]))
            blocked.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(publisher)
            await wait_all_tasks_blocked()
            assert not blocked.is_set()  # waiting for room, not queueing more
            await nursery.start(log.run)
            with trio.fail_after(30):
                await blocked.wait()
                await receipts[0].wait()
            nursery.cancel_scope.cancel()
    assert sum(stored) == len(big) + 2
