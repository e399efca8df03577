"""A client's session: subscriptions, the deliveries owed to it, packet-id state.

A :class:`Session` outlives its connections when it is persistent (MQTT 5
session expiry above 0, or a 3.1.1 clean-session-0 client). Deliveries wait in
``queue`` until the connection's window (the client's Receive Maximum) has
room, then sit in ``inflight`` under their packet id until acknowledged.
Deliveries of a persistent session at QoS 1/2 are also pointers in the
session store (``seq``), so they survive a restart; ``message`` is then None
until the broker reads it back from its shard. No I/O here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .messages import Message

if TYPE_CHECKING:
    from .connection import Connection

__all__ = ["NEVER", "Delivery", "DeliveryState", "Session", "SubOptions"]

NEVER = 0xFFFFFFFF  # Session Expiry Interval meaning "does not expire"


@dataclass(frozen=True, slots=True)
class SubOptions:
    """One subscription's options, as granted."""

    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0
    subscription_id: int = 0  # 0: none

    def to_json(self) -> list[int]:
        return [
            self.qos,
            int(self.no_local),
            int(self.retain_as_published),
            self.retain_handling,
            self.subscription_id,
        ]

    @classmethod
    def from_json(cls, doc: list[int]) -> SubOptions:
        qos, nl, rap, rh, sid = doc
        return cls(qos, bool(nl), bool(rap), rh, sid)


class DeliveryState(enum.IntEnum):
    QUEUED = 0  # not sent yet (or sent before a restart and not acknowledged: resent)
    SENT = 1  # PUBLISH sent, awaiting PUBACK / PUBREC
    RELEASED = 2  # PUBREL sent, awaiting PUBCOMP


@dataclass(slots=True, eq=False)
class Delivery:
    """One message owed to one session."""

    message: Message | None  # None: to be read back from (shard, offset)
    qos: int
    retain: bool
    subscription_ids: tuple[int, ...] = ()
    shard: int = -1
    offset: int = -1
    seq: int = 0  # key in the session store; 0: not stored
    packet_id: int = 0
    state: DeliveryState = DeliveryState.QUEUED
    share: tuple[str, str] | None = None  # (group, filter) of a shared subscription
    encoded: bytes | None = None  # the PUBLISH bytes, shared by same-version subscribers


@dataclass(slots=True, eq=False)
class Session:
    """The server side of one client id."""

    client_id: str
    version: int
    expiry: int = 0  # seconds after disconnect; NEVER: keep forever
    subscriptions: dict[str, SubOptions] = field(default_factory=dict)
    queue: list[Delivery] = field(default_factory=list)  # a list: a deque costs 600 B idle
    inflight: dict[int, Delivery] = field(default_factory=dict)
    inbound: set[int] = field(default_factory=set)  # QoS 2 packet ids awaiting PUBREL
    connection: Connection | None = None
    disconnected_at: float = 0.0  # monotonic seconds
    disconnected_ms: int = 0  # wall clock, stored: expiry counts from it across restarts
    next_seq: int = 1
    _next_pid: int = 1

    @property
    def persistent(self) -> bool:
        return self.expiry != 0

    @property
    def backlog(self) -> int:
        return len(self.queue) + len(self.inflight)

    def allocate_packet_id(self) -> int:
        """A packet id not in flight (the caller keeps fewer than 65,535 in flight)."""
        pid = self._next_pid
        while pid in self.inflight:
            pid = pid % 0xFFFF + 1
        self._next_pid = pid % 0xFFFF + 1
        return pid

    def take_seq(self) -> int:
        seq = self.next_seq
        self.next_seq += 1
        return seq

    def expires_at(self) -> float | None:
        """Monotonic time the (disconnected) session ends; None: never."""
        if self.expiry == NEVER:
            return None
        return self.disconnected_at + self.expiry

    def document(self) -> dict[str, object]:
        """What the session store keeps of it besides deliveries and inbound ids."""
        return {
            "version": self.version,
            "expiry": self.expiry,
            "subs": {f: o.to_json() for f, o in self.subscriptions.items()},
            "disconnected_ms": self.disconnected_ms,
        }
