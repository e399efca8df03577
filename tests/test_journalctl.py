"""``strata-journal``: the installed console script, run as a subprocess on data
directories the journal builds in the test.

Every option is exercised; JSON output is compared with what was appended;
``--follow`` sees appends made by this process while it holds the journal
open (the tool reads beside it); ``--verify`` catches a flipped bit, a torn
tail and a missing index; object-tier segments on moto's S3 are listed, read
and verified; vacuum refuses while the directory is held. Unit tests of the
time parser, option parsing and formatters are at the end.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
from objectstores import ObjectStore

from journal import Journal, Record, StreamConfig
from journal.segments.batch import HEADER_SIZE, BatchHeader, parse_header
from tools.journalctl.cli import parse_object_options
from tools.journalctl.output import RecordItem, format_record, preview
from tools.journalctl.timespec import TimeSpecError, parse_age, parse_size, parse_time

_SCRIPT = Path(sys.executable).parent / "strata-journal"
_COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "tools.journalctl"]
T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z


async def run(*args: str | Path) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [*_COMMAND, *map(str, args)], capture_stdout=True, capture_stderr=True, check=False
    )


async def run_json(*args: str | Path) -> list[dict[str, Any]]:
    done = await run(*args, "-o", "json")
    assert done.returncode == 0, done.stderr.decode()
    return [json.loads(line) for line in done.stdout.decode().splitlines()]


def record(i: int) -> Record:
    value = f"value {i}".encode() if i % 5 else bytes([0, 255, i % 256])  # some not UTF-8
    headers: list[tuple[str, bytes | None]] = [("n", str(i).encode()), ("raw", b"\xfe\x00")]
    if i % 7 == 0:
        headers.append(("none", None))
    key = None if i % 3 == 0 else f"key-{i}".encode()
    return Record(value=value, key=key, headers=headers, timestamp=T0 + i * 1000)


def decoded(field: Any) -> bytes | None:
    if field is None:
        return None
    if isinstance(field, dict):
        return base64.b64decode(field["base64"])
    assert isinstance(field, str)
    return field.encode()


async def build(path: Path, n: int = 60, *, segment_bytes: int = 1500) -> None:
    """Stream ``orders`` with ``n`` records over several segments, and a small ``audit``."""
    async with Journal.open(path) as j:
        await j.create_stream("orders", StreamConfig(segment_bytes=segment_bytes, memory_bytes=0))
        await j.create_stream("audit", StreamConfig())
        for i in range(n):
            await j.append("orders", [record(i)])
        await j.append("audit", [Record(value=b"hello\nworld", timestamp=T0)])


def batch_positions(log: Path) -> list[tuple[int, BatchHeader]]:
    data = log.read_bytes()
    out, pos = [], 0
    while pos + HEADER_SIZE <= len(data):
        header = parse_header(data, pos)
        out.append((pos, header))
        pos += header.size
    return out


def sealed_logs(path: Path, stream_dir: str = "000001-orders") -> list[Path]:
    return sorted((path / "streams" / stream_dir).glob("*.log"))


async def test_lists_streams_by_default(tmp_path: Path) -> None:
    await build(tmp_path)
    done = await run("-D", tmp_path)
    assert done.returncode == 0
    lines = done.stdout.decode().splitlines()
    assert lines[0].split()[:4] == ["STREAM", "ID", "FIRST", "NEXT"]
    orders = next(line for line in lines if line.startswith("orders")).split()
    assert orders[2:4] == ["0", "60"]
    assert "local:" in " ".join(orders)
    assert "memory:1" in " ".join(orders)
    audit = next(line for line in lines if line.startswith("audit")).split()
    assert audit[2:4] == ["0", "1"]


async def test_json_output_matches_appended_records(tmp_path: Path) -> None:
    await build(tmp_path)
    docs = await run_json("-D", tmp_path, "--stream", "orders")
    assert [d["offset"] for d in docs] == list(range(60))
    for i, doc in enumerate(docs):
        want = record(i)
        assert doc["timestamp"] == want.timestamp
        assert decoded(doc["key"]) == want.key
        assert decoded(doc["value"]) == want.value
        assert [(k, decoded(v)) for k, v in doc["headers"]] == want.headers
    assert {d["tier"] for d in docs} == {"local", "memory"}


async def test_offset_and_time_ranges(tmp_path: Path) -> None:
    await build(tmp_path)
    D = ("-D", tmp_path, "--stream", "ord*")

    async def offsets(*args: str) -> list[int]:
        return [d["offset"] for d in await run_json(*D, *args)]

    assert await offsets("--from-offset", "10", "--to-offset", "25") == list(range(10, 26))
    assert await offsets("--since", "2023-11-14T22:13:30Z", "--until", str(T0 + 14_000)) == list(
        range(10, 15)
    )
    assert await offsets("--since", "now") == []
    assert await offsets("--since", "-1h") == []  # the records are from 2023
    assert await offsets("-S", "-3650d", "-n", "1") == [59]


async def test_lines_reverse_and_grep(tmp_path: Path) -> None:
    await build(tmp_path)
    D = ("-D", tmp_path, "--stream", "ord*")

    async def offsets(*args: str) -> list[int]:
        return [d["offset"] for d in await run_json(*D, *args)]

    assert await offsets("-n", "3") == [57, 58, 59]
    assert await offsets("-r", "--to-offset", "2") == [2, 1, 0]
    assert await offsets("-n", "2", "-r") == [59, 58]
    assert await offsets("--grep", "^value 1[0-4]$") == [11, 12, 13, 14]  # 10 is binary
    assert await offsets("--grep", "key-4[0-2]") == [40, 41]  # keys
    assert await offsets("--grep", "^none$") == [i for i in range(60) if i % 7 == 0]  # headers


async def test_output_modes(tmp_path: Path) -> None:
    await build(tmp_path)
    D = ("-D", tmp_path, "--stream", "orders", "--from-offset", "5", "--to-offset", "6")
    short = (await run(*D)).stdout.decode().splitlines()
    assert short == [
        "2023-11-14T22:13:25.000Z orders[5] key=key-5 {n=5, raw=b'\\xfe\\x00'}: b'\\x00\\xff\\x05'",
        "2023-11-14T22:13:26.000Z orders[6] {n=6, raw=b'\\xfe\\x00'}: value 6",
    ]
    verbose = (await run(*D, "-o", "verbose")).stdout.decode()
    assert "header n=6" in verbose
    assert "value=value 6 (7 bytes)" in verbose
    assert (await run(*D, "-o", "cat")).stdout.decode().splitlines()[1] == "value 6"
    hexed = (await run(*D, "-o", "hex")).stdout.decode()
    assert "00 ff 05" in hexed
    assert "|value 6|" in hexed
    pretty = (await run(*D, "-o", "json-pretty")).stdout.decode()
    assert pretty.count('"offset"') == 2
    assert '\n  "offset": 6,' in pretty
    batches = (await run(*D, "-o", "batch")).stdout.decode().splitlines()
    assert len(batches) == 2
    assert "baseOffset=5 lastOffset=5 count=1" in batches[0]
    assert "producerId=-1" in batches[0]
    assert "compression=none" in batches[0]
    assert batches[0].endswith("valid")
    assert "tier=local" in batches[0]
    audit = (await run("-D", tmp_path, "--stream", "audit")).stdout.decode()
    assert "hello\\nworld" in audit  # newlines escaped in previews


async def test_help_reads_like_a_man_page() -> None:
    done = await run("--help")
    text = done.stdout.decode()
    assert done.returncode == 0
    for word in ("--follow", "--verify", "--vacuum-size", "examples:", "exit status:"):
        assert word in text


async def test_unknown_stream_and_bad_arguments(tmp_path: Path) -> None:
    await build(tmp_path, 3)
    missing = await run("-D", tmp_path, "--stream", "nope*")
    assert missing.returncode == 1
    assert b"no stream matches" in missing.stderr
    bad = await run("-D", tmp_path, "--since", "someday")
    assert bad.returncode == 2
    assert b"cannot parse time" in bad.stderr
    nodir = await run("-D", tmp_path / "absent")
    assert nodir.returncode == 1
    assert b"not a journal data directory" in nodir.stderr


async def test_list_segments_and_disk_usage(tmp_path: Path) -> None:
    await build(tmp_path)
    segs = await run_json("-D", tmp_path, "--list-segments", "--stream", "orders")
    assert segs[0]["base_offset"] == 0
    assert segs[-1]["last_offset"] == 59
    assert [s["tier"] for s in segs] == ["local"] * (len(segs) - 1) + ["memory"]
    assert all(s["state"] == "sealed,verified" for s in segs[:-1])
    assert segs[-1]["state"] == "active"
    for a, b in itertools.pairwise(segs):
        assert b["base_offset"] == a["last_offset"] + 1
    assert segs[0]["first_timestamp"] == T0
    text = (await run("-D", tmp_path, "--list-segments")).stdout.decode()
    assert "stream audit" in text
    assert "sealed,verified" in text
    usage = await run_json("-D", tmp_path, "--disk-usage")
    orders = next(u for u in usage if u.get("stream") == "orders")
    on_disk = sum(p.stat().st_size for p in (tmp_path / "streams" / "000001-orders").iterdir())
    assert orders["local"] == on_disk
    assert orders["object"] == 0
    assert usage[-1]["total"] is True
    assert usage[-1]["catalog"] > 0
    assert "total" in (await run("-D", tmp_path, "--disk-usage")).stdout.decode()


async def test_verify_clean_directory(tmp_path: Path) -> None:
    await build(tmp_path)
    done = await run("-D", tmp_path, "--verify")
    assert done.returncode == 0, done.stdout.decode()
    assert "orders:" in done.stdout.decode()
    assert "60 batches checked: OK" in done.stdout.decode()


async def test_verify_catches_a_flipped_bit(tmp_path: Path) -> None:
    await build(tmp_path)
    log = sealed_logs(tmp_path)[0]
    pos, header = batch_positions(log)[2]
    assert header.base_offset == 2
    data = bytearray(log.read_bytes())
    data[pos + 70] ^= 0x10  # a bit of the third batch's records, under its CRC
    log.write_bytes(data)
    done = await run("-D", tmp_path, "--verify")
    out = done.stdout.decode()
    assert done.returncode == 1
    assert f"segment {log} position {pos}: batch at offset 2: CRC32C mismatch" in out
    # reading skips the bad batch with a report and goes on
    read = await run("-D", tmp_path, "--stream", "orders", "-o", "json")
    assert read.returncode == 0
    offsets = [json.loads(line)["offset"] for line in read.stdout.decode().splitlines()]
    assert offsets == [i for i in range(60) if i != 2]
    assert f"position {pos}: skipping batch: CRC32C mismatch".encode() in read.stderr


async def test_verify_catches_a_torn_tail(tmp_path: Path) -> None:
    await build(tmp_path)
    active = sealed_logs(tmp_path)[-1]
    last = batch_positions(active)[-1][0]
    os.truncate(active, active.stat().st_size - 30)  # the last batch loses its end
    done = await run("-D", tmp_path, "--verify")
    assert done.returncode == 1
    assert f"segment {active} position {last}: torn tail: truncated batch" in (done.stdout.decode())
    read = await run_json("-D", tmp_path, "--stream", "orders", "-n", "1")
    assert read[0]["offset"] == 58  # the torn record is not shown, the rest is


async def test_verify_catches_a_missing_index(tmp_path: Path) -> None:
    await build(tmp_path)
    log = sealed_logs(tmp_path)[1]
    log.with_suffix(".index").unlink()
    done = await run("-D", tmp_path, "--verify")
    assert done.returncode == 1
    assert f"segment {log} position 0: .index file is missing" in done.stdout.decode()


async def test_verify_catches_a_catalog_mismatch(tmp_path: Path) -> None:
    await build(tmp_path)
    log = sealed_logs(tmp_path)[0]
    os.truncate(log, batch_positions(log)[-1][0])  # a whole batch gone from a sealed segment
    done = await run("-D", tmp_path, "--verify")
    assert done.returncode == 1
    assert "but the catalog says" in done.stdout.decode()


async def read_lines(stream: trio.abc.ReceiveStream, buffer: bytearray, n: int) -> list[str]:
    """The next ``n`` lines from ``stream`` (the caller bounds the wait)."""
    while buffer.count(b"\n") < n:
        chunk = await stream.receive_some()
        assert chunk, "the tool exited"
        buffer.extend(chunk)
    lines = []
    for _ in range(n):
        line, _, rest = bytes(buffer).partition(b"\n")
        buffer[:] = rest
        lines.append(line.decode())
    return lines


async def test_follow_sees_appends_from_another_process(tmp_path: Path) -> None:
    async with Journal.open(tmp_path) as j:
        await j.create_stream("orders", StreamConfig(segment_bytes=1000, memory_bytes=0))
        for i in range(15):
            await j.append("orders", [record(i)])
        process = await trio.lowlevel.open_process(
            [*_COMMAND, "-D", str(tmp_path), "--stream", "orders", "-f", "-o", "json"],
            stdout=subprocess.PIPE,
        )
        try:
            assert process.stdout is not None
            buffer = bytearray()
            with trio.fail_after(10):
                first = await read_lines(process.stdout, buffer, 10)  # -f shows the last 10
                assert [json.loads(x)["offset"] for x in first] == list(range(5, 15))
                for i in range(15, 40):  # several rolls on the way
                    await j.append("orders", [record(i)])
                more = await read_lines(process.stdout, buffer, 25)
            docs = [json.loads(x) for x in more]
            assert [d["offset"] for d in docs] == list(range(15, 40))
            assert [decoded(d["value"]) for d in docs] == [record(i).value for i in range(15, 40)]
            assert len({d["segment"] for d in docs}) > 1
        finally:
            process.terminate()
            await process.wait()


async def test_follow_stops_at_to_offset(tmp_path: Path) -> None:
    async with Journal.open(tmp_path) as j:
        await j.create_stream("orders", StreamConfig(segment_bytes=1000))
        for i in range(3):
            await j.append("orders", [record(i)])
        process = await trio.lowlevel.open_process(
            [*_COMMAND, "-D", str(tmp_path), "--stream", "orders", "-f", "--from-offset", "1",
             "--to-offset", "4", "-o", "cat"],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        try:
            assert process.stdout is not None
            buffer = bytearray()
            with trio.fail_after(10):
                assert await read_lines(process.stdout, buffer, 2) == ["value 1", "value 2"]
                for i in range(3, 8):
                    await j.append("orders", [record(i)])
                assert await read_lines(process.stdout, buffer, 2) == ["value 3", "value 4"]
                assert await process.wait() == 0  # it exits once offset 4 was printed
            assert await process.stdout.receive_some() == b""
        finally:
            if process.returncode is None:
                process.terminate()
                await process.wait()


async def build_tiered(path: Path, store: ObjectStore) -> tuple[set[str], list[str]]:
    """40 records of ``orders``, all sealed segments moved to ``store``: (object keys, options)."""
    cfg = StreamConfig(segment_bytes=1500, memory_bytes=0, local_retention_bytes=0)
    async with Journal.open(path, object_url=store.url, object_options=store.options) as j:
        await j.create_stream("orders", cfg)
        for i in range(40):
            await j.append("orders", [record(i)])
        assert await j.migrate("orders") >= 1
        keys = {f"{s.key}" for s in j.segments("orders") if s.tier == "object"}
    options = [
        f"--object-option=key={store.options['key']}",
        f"--object-option=secret={store.options['secret']}",
        f"--object-option=client_kwargs.endpoint_url="
        f"{store.options['client_kwargs']['endpoint_url']}",
        "--object-option=client_kwargs.region_name=us-east-1",
    ]
    return keys, options


async def test_object_tier_segments_are_listed_read_and_verified(
    tmp_path: Path, s3_store: ObjectStore
) -> None:
    keys, options = await build_tiered(tmp_path, s3_store)
    segs = await run_json("-D", tmp_path, "--list-segments", *options)
    listed = {f"{s['key']}.log" for s in segs if s["tier"] == "object"}
    assert listed == keys
    assert len(listed) >= 1
    assert all(s["first_timestamp"] is not None for s in segs if s["tier"] == "object")
    docs = await run_json("-D", tmp_path, "--stream", "orders", *options)
    assert [d["offset"] for d in docs] == list(range(40))
    assert [decoded(d["value"]) for d in docs] == [record(i).value for i in range(40)]
    assert "object" in {d["tier"] for d in docs}
    checked = await run("-D", tmp_path, "--verify", *options)
    assert checked.returncode == 0, checked.stdout.decode()
    usage = await run_json("-D", tmp_path, "--disk-usage", *options)
    assert usage[0]["object"] > 0
    assert usage[0]["object_segments"] == len(listed)


async def test_object_tier_damage_is_reported(tmp_path: Path, s3_store: ObjectStore) -> None:
    keys, options = await build_tiered(tmp_path, s3_store)
    import fsspec

    fs, root = fsspec.core.url_to_fs(s3_store.url, **s3_store.options)
    # a flipped bit in an object: its batch CRC and the upload CRC both fail
    rotten = sorted(keys)[-1]
    rotten_base = int(rotten.split("/")[-1].split("-")[0])
    data = bytearray(fs.cat_file(f"{root}/{rotten}"))
    data[50] ^= 0x01  # the first batch's producer id: under its CRC
    fs.pipe_file(f"{root}/{rotten}", bytes(data))
    # an object gone from the store
    gone = sorted(keys)[0]
    fs.rm_file(f"{root}/{gone}")
    checked = await run("-D", tmp_path, "--verify", *options)
    out = checked.stdout.decode()
    assert checked.returncode == 1
    assert f"segment {rotten}: object CRC32C" in out
    assert f"segment {rotten} position 0: batch at offset {rotten_base}: CRC32C mismatch" in out
    assert f"object {gone} is missing" in out
    read = await run("-D", tmp_path, "--stream", "orders", *options)
    assert read.returncode == 0
    assert b"is missing" in read.stderr
    assert b"skipping batch: CRC32C mismatch" in read.stderr
    assert b"value 39" in read.stdout  # the rest is read


async def test_vacuum_on_the_object_tier(tmp_path: Path, s3_store: ObjectStore) -> None:
    keys, options = await build_tiered(tmp_path, s3_store)
    done = await run("-D", tmp_path, "--vacuum-size", "0", *options)
    assert done.returncode == 0, done.stderr.decode()
    left = await run_json("-D", tmp_path, "--list-segments", *options)
    assert [s["tier"] for s in left] == ["memory"]
    import fsspec

    fs, root = fsspec.core.url_to_fs(s3_store.url, **s3_store.options)
    fs.invalidate_cache()
    assert not any(fs.exists(f"{root}/{key}") for key in keys)


async def test_vacuum_refused_while_open_and_done_when_closed(tmp_path: Path) -> None:
    await build(tmp_path)
    before = await run_json("-D", tmp_path, "--list-segments", "--stream", "orders")
    async with Journal.open(tmp_path):
        refused = await run("-D", tmp_path, "--vacuum-size", "2K")
    assert refused.returncode == 2
    assert b"refusing to vacuum" in refused.stderr
    done = await run("-D", tmp_path, "--vacuum-size", "2K", "--stream", "orders")
    assert done.returncode == 0, done.stderr.decode()
    assert "orders: removed" in done.stdout.decode()
    after = await run_json("-D", tmp_path, "--list-segments", "--stream", "orders")
    assert len(after) < len(before)
    assert after[-1]["last_offset"] == 59
    assert sum(s["size"] for s in after[:-1]) <= 2048
    aged = await run("-D", tmp_path, "--vacuum-time", "1d")  # records are from 2023
    assert aged.returncode == 0
    left = await run_json("-D", tmp_path, "--list-segments", "--stream", "orders")
    assert [s["state"] for s in left] == ["active"]
    # the override was for that run only: the stream's config is unchanged
    async with Journal.open(tmp_path) as j:
        assert j.stream_info("orders").config.retention_bytes is None


# -- units ----------------------------------------------------------------------------

NOW = 1_795_000_000_000  # 2026-11-18T...


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("-1h", NOW - 3_600_000),
        ("-30m", NOW - 1_800_000),
        ("+10s", NOW + 10_000),
        ("-2d", NOW - 2 * 86_400_000),
        ("1700000000000", 1_700_000_000_000),
        ("2023-11-14T22:13:20Z", 1_700_000_000_000),
        ("2023-11-14T22:13:20", 1_700_000_000_000),
        ("2023-11-15T00:13:20+02:00", 1_700_000_000_000),
        ("2023-11-14", 1_699_920_000_000),
        ("today", NOW - NOW % 86_400_000),
        ("yesterday", NOW - NOW % 86_400_000 - 86_400_000),
    ],
)
def test_parse_time(text: str, expected: int) -> None:
    assert parse_time(text, NOW) == expected


def test_parse_time_age_and_size_errors() -> None:
    for bad in ("soon", "-1y", ""):
        with pytest.raises(TimeSpecError):
            parse_time(bad, NOW)
    assert parse_age("7d") == 7 * 86_400_000
    assert parse_age("500ms") == 500
    with pytest.raises(TimeSpecError):
        parse_age("-1h")
    assert parse_size("1G") == 1 << 30
    assert parse_size("64KiB") == 64 << 10
    assert parse_size("1000") == 1000
    with pytest.raises(TimeSpecError):
        parse_size("lots")


def test_object_options_nest() -> None:
    parsed = parse_object_options(
        ["key=abc", "client_kwargs.endpoint_url=http://x:1", "anon=false", "secret=123.0"]
    )
    assert parsed == {
        "key": "abc",
        "client_kwargs": {"endpoint_url": "http://x:1"},
        "anon": False,
        "secret": "123.0",
    }
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_object_options(["novalue"])


def _item(value: bytes | None, headers: Sequence[tuple[str, bytes | None]] = ()) -> RecordItem:
    r = Record(value=value, key=b"k", headers=list(headers), timestamp=T0, offset=7)
    return RecordItem("s", 0, "local", 0, r)


def test_formatters() -> None:
    assert preview(b"plain") == "plain"
    assert preview(b"\x00\x01") == "b'\\x00\\x01'"
    assert preview(None) == "null"
    assert preview(b"x" * 200, 10) == "xxxxxxxxxx... (200 bytes)"
    line = format_record("short", _item("héllo".encode(), [("content-type", b"text/plain")]))
    assert line == "2023-11-14T22:13:20.000Z s[7] key=k {content-type=text/plain}: héllo"
    doc = json.loads(format_record("json", _item(b"\xff", [("h", None)])))
    assert doc["value"] == {"base64": "/w=="}
    assert doc["headers"] == [["h", None]]
    assert format_record("cat", _item(None)) == ""
    assert "|ab|" in format_record("hex", _item(b"ab"))
