"""On-disk pieces of the journal: the RecordBatch v2 codec, sparse indexes, segment files.

``batch`` and ``index`` are pure (no I/O); ``segment`` reads and writes one file.
"""

from journal.segments.batch import (
    HEADER_SIZE,
    BatchHeader,
    check_batch,
    check_client_batch,
    decode_batch,
    encode_batch,
    iter_batches,
    parse_header,
    set_base_offset,
    validate_batch,
)
from journal.segments.index import SparseIndex
from journal.segments.segment import ScanResult, Segment, scan_batches, segment_name

__all__ = [
    "HEADER_SIZE",
    "BatchHeader",
    "ScanResult",
    "Segment",
    "SparseIndex",
    "check_batch",
    "check_client_batch",
    "decode_batch",
    "encode_batch",
    "iter_batches",
    "parse_header",
    "scan_batches",
    "segment_name",
    "set_base_offset",
    "validate_batch",
]
