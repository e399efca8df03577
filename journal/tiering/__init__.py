"""Tiered storage: memory, local disk and object storage behind one contract.

* :mod:`~journal.tiering.base` -- the :class:`Tier` contract;
* :mod:`~journal.tiering.memory`, :mod:`~journal.tiering.local`,
  :mod:`~journal.tiering.object` -- the three tiers;
* :mod:`~journal.tiering.cache` -- a read cache that wraps a tier;
* :mod:`~journal.tiering.remote` -- a sealed segment read from the object tier;
* :mod:`~journal.tiering.migration` -- the service that moves segments there;
* :mod:`~journal.tiering.analytics` -- Arrow tables and Parquet export.

How a move stays crash-safe is in ``docs/tiering.md``.
"""

from journal.tiering.base import Tier, TierKind
from journal.tiering.cache import CachedTier, CacheStatistics
from journal.tiering.local import LocalTier
from journal.tiering.memory import MemoryTier, RecentBatches
from journal.tiering.object import ObjectTier
from journal.tiering.remote import RemoteSegment

__all__ = [
    "CacheStatistics",
    "CachedTier",
    "LocalTier",
    "MemoryTier",
    "ObjectTier",
    "RecentBatches",
    "RemoteSegment",
    "Tier",
    "TierKind",
]
