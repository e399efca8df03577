"""``FrameWriter``: every write to one journal RPC socket, coalesced (server and client).

How it works. A sender encodes its frame (``Connection.send``) and hands the
bytes to :meth:`FrameWriter.write` with no await in between, so frames reach
the queue in the order the connection's state machine saw them. If no flush
is running, the sender becomes the flusher: it sends everything queued, then
whatever was queued meanwhile, until the queue is empty. Small frames queued
together go out joined in one ``send_all`` (pipelined answers share a
syscall); a large frame is sent on its own, not copied into a join. Senders
that arrive during a flush return at once, their frame goes out with the next
send, unless more than ``max_buffer`` bytes are queued: then they wait until
the flusher has drained the queue, so a peer that does not read holds its
senders back instead of filling memory.

This is the connection's one write path (the single flusher is the lock):
frames are never split or interleaved. The flush is shielded from
cancellation, since half a frame on the wire would desynchronize the peer,
and has its own deadline: a peer that takes no bytes for ``timeout`` seconds
breaks the writer. A broken writer closes the socket (which ends the
reader's wait) and refuses every later write with
:class:`trio.BrokenResourceError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import trio

__all__ = ["FrameWriter"]

JOIN_LIMIT = 64 << 10  # frames at least this large are sent alone, not joined


class FrameWriter:
    """The write side of one socket; see the module docstring."""

    def __init__(
        self,
        stream: trio.abc.SendStream,
        *,
        timeout: float,
        max_buffer: int = 1 << 20,
        on_sent: Callable[[int], None] | None = None,
    ) -> None:
        self.stream = stream
        self.timeout = timeout
        self.max_buffer = max_buffer
        self.on_sent = on_sent
        self.broken = False
        self.why = ""
        self._queue: list[bytes] = []
        self._queued = 0
        self._flushing = False
        self._drained = trio.Event()  # set (and replaced) each time a flush ends

    async def write(self, data: bytes) -> None:
        """Queue ``data`` (whole frames) and see it sent; BrokenResourceError if the
        connection is gone. Returns before the bytes are on the wire when another
        task is flushing and the queue is under ``max_buffer``."""
        if self.broken:
            raise trio.BrokenResourceError(self.why)
        if data:
            self._queue.append(data)
            self._queued += len(data)
        if not self._flushing:
            await self._flush()
        elif self._queued > self.max_buffer:
            await self._drained.wait()
            if self.broken:
                raise trio.BrokenResourceError(self.why)

    async def _flush(self) -> None:
        self._flushing = True
        try:
            with trio.CancelScope(shield=True) as scope:
                while self._queue and not self.broken:
                    frames, self._queue, self._queued = self._queue, [], 0
                    for chunk in _chunks(frames):
                        scope.deadline = trio.current_time() + self.timeout
                        await self.stream.send_all(chunk)
                        if self.on_sent is not None:
                            self.on_sent(len(chunk))
            if scope.cancelled_caught:
                await self.fail(f"no progress writing for {self.timeout}s")
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            await self.fail(f"connection lost ({exc})")
        finally:
            self._flushing = False
            self._drained.set()
            self._drained = trio.Event()
        if self.broken:
            raise trio.BrokenResourceError(self.why)

    async def fail(self, why: str) -> None:
        """Break the writer and close the socket (idempotent)."""
        if not self.broken:
            self.broken = True
            self.why = why
            self._queue, self._queued = [], 0
        await trio.aclose_forcefully(self.stream)


def _chunks(frames: list[bytes]) -> Iterator[bytes]:
    """The queued frames as few writes: runs of small frames joined, large ones alone."""
    small: list[bytes] = []
    for frame in frames:
        if len(frame) < JOIN_LIMIT:
            small.append(frame)
            continue
        if small:
            yield b"".join(small)
            small = []
        yield frame
    if small:
        yield small[0] if len(small) == 1 else b"".join(small)
