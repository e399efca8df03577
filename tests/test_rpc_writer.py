"""The journal RPC's FrameWriter: whole frames, in order, coalesced, bounded, timed out."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from journal.rpc.writer import JOIN_LIMIT, FrameWriter


class _GatedStream(trio.abc.SendStream):
    """Records each send_all; blocks every send until ``gate`` is set."""

    def __init__(self) -> None:
        self.sends: list[bytes] = []
        self.gate = trio.Event()
        self.closed = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.closed:
            raise trio.ClosedResourceError
        await self.gate.wait()
        self.sends.append(bytes(data))

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        self.closed = True
        await trio.lowlevel.checkpoint()


async def test_frames_queued_during_a_send_go_out_together_in_order() -> None:
    stream = _GatedStream()
    writer = FrameWriter(stream, timeout=10)
    big = b"B" * JOIN_LIMIT
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.write, b"first")  # becomes the flusher, blocks
        await trio.testing.wait_all_tasks_blocked()
        for frame in (b"a", b"b", big, b"c"):
            await writer.write(frame)  # queued: returns at once
        stream.gate.set()
    assert stream.sends == [b"first", b"ab", big, b"c"]  # a large frame is not joined


async def test_senders_wait_when_more_than_max_buffer_is_queued() -> None:
    stream = _GatedStream()
    writer = FrameWriter(stream, timeout=10, max_buffer=10)
    returned: list[bytes] = []

    async def write(frame: bytes) -> None:
        await writer.write(frame)
        returned.append(frame)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write, b"first")
        await trio.testing.wait_all_tasks_blocked()
        await write(b"12345")
        nursery.start_soon(write, b"678901")  # 11 bytes queued: over the limit
        await trio.testing.wait_all_tasks_blocked()
        assert returned == [b"12345"]
        stream.gate.set()
    assert sorted(returned) == sorted([b"first", b"12345", b"678901"])
    assert stream.sends == [b"first", b"12345678901"]


async def test_a_peer_that_takes_nothing_breaks_the_writer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stream = _GatedStream()
    writer = FrameWriter(stream, timeout=10)
    with pytest.raises(trio.BrokenResourceError):
        await writer.write(b"frame")
    assert writer.broken
    assert stream.closed
    assert trio.current_time() == pytest.approx(10)
    with pytest.raises(trio.BrokenResourceError):
        await writer.write(b"later")


async def test_a_cancelled_flusher_still_sends_its_frames_whole() -> None:
    stream = _GatedStream()
    writer = FrameWriter(stream, timeout=10)
    with trio.CancelScope() as scope:
        scope.cancel()
        stream.gate.set()
        await writer.write(b"frame")
    assert stream.sends == [b"frame"]
