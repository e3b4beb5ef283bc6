"""A partition's log as the broker stores it, transaction markers included.

Kafka clients hide control records (the COMMIT and ABORT markers that end a
transaction), and a read_committed client relies on the broker's list of
aborted transactions, which the local broker does not send (BROKER.md). So
to see which records Kafka itself considers committed, this module sends a
plain Fetch request and reads the record batches: a transactional batch
belongs to its producer's open transaction until a control batch of that
producer commits or aborts it.
"""

from __future__ import annotations

import json
import socket
import struct
from dataclasses import dataclass, field

from kafka.record import MemoryRecords

FETCH, FETCH_VERSION = 1, 4
ABORT, COMMIT = 0, 1


@dataclass
class Transactions:
    """The data records of a partition by how their transaction ended."""

    committed: list = field(default_factory=list)  # (offset, value) of committed transactions
    aborted: list = field(default_factory=list)  # (offset, value) of aborted ones
    open: list = field(default_factory=list)  # still in a transaction with no marker yet
    markers: dict = field(default_factory=lambda: {ABORT: 0, COMMIT: 0})  # control records seen
    plain: list = field(default_factory=list)  # records not sent in a transaction


def _string(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def _fetch(sock: socket.socket, topic: str, partition: int, offset: int, correlation: int) -> tuple[int, bytes]:
    """One Fetch (v4, read_uncommitted): the high watermark and the raw batches."""
    body = struct.pack(">iiiib", -1, 500, 1, 64 << 20, 0)
    body += struct.pack(">i", 1) + _string(topic)
    body += struct.pack(">i", 1) + struct.pack(">iqi", partition, offset, 32 << 20)
    request = struct.pack(">hhi", FETCH, FETCH_VERSION, correlation) + _string("strata-tests") + body
    sock.sendall(struct.pack(">i", len(request)) + request)
    size = struct.unpack(">i", _read(sock, 4))[0]
    data = _read(sock, size)
    pos = 4 + 4  # correlation id, throttle time
    assert struct.unpack_from(">i", data, pos)[0] == 1
    pos += 4
    name_len = struct.unpack_from(">h", data, pos)[0]
    pos += 2 + name_len
    assert struct.unpack_from(">i", data, pos)[0] == 1
    pos += 4
    _, error, high = struct.unpack_from(">ihq", data, pos)
    assert error == 0, f"fetch of {topic}/{partition} at {offset}: error {error}"
    pos += 4 + 2 + 8 + 8  # partition, error, high watermark, last stable offset
    aborted = struct.unpack_from(">i", data, pos)[0]
    pos += 4 + max(aborted, 0) * 16
    records_len = struct.unpack_from(">i", data, pos)[0]
    pos += 4
    return high, data[pos:pos + max(records_len, 0)]


def _read(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        out += chunk
    return out


def transactions(bootstrap: str, topic: str, partition: int) -> Transactions:
    """Reads `topic`/`partition` from its start to its high watermark (the
    broker must lead the partition: a single-broker test setup)."""
    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    out = Transactions()
    pending: dict[int, list] = {}
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        offset, correlation = 0, 0
        while True:
            correlation += 1
            high, raw = _fetch(sock, topic, partition, offset, correlation)
            if offset >= high:
                break
            records = MemoryRecords(raw)
            advanced = False
            while records.has_next():
                batch = records.next_batch()
                if batch is None:
                    break
                if batch.next_offset <= offset:
                    continue
                advanced = True
                offset = batch.next_offset
                if batch.is_control_batch:
                    for record in batch:
                        kind = struct.unpack(">hh", record.key)[1]
                        out.markers[kind] += 1
                        done = pending.pop(batch.producer_id, [])
                        (out.committed if kind == COMMIT else out.aborted).extend(done)
                    continue
                for record in batch:
                    row = (record.offset, json.loads(record.value))
                    if batch.is_transactional:
                        pending.setdefault(batch.producer_id, []).append(row)
                    else:
                        out.plain.append(row)
            assert advanced, f"no batch past offset {offset} of {topic}/{partition} (high watermark {high})"
    out.open = [row for rows in pending.values() for row in rows]
    return out
