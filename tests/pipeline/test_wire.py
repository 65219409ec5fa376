"""Header and packet round trips over the wire format, property-based, on real and random data."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core import wire
from pipeline.core.events import EVENT_DTYPE, FEATURE_DTYPE, register_dtype
from pipeline.core.packet import (
    DATA,
    EOS,
    Header,
    Packet,
    Segment,
    eos_packet,
    json_packet,
)
from sensors.readers import read_all
from tests.conftest import AEDAT4_SAMPLE

SPIKE_DTYPE = register_dtype("test_spikes", np.dtype([("t", "<i8"), ("neuron", "<i4"), ("layer", "<i2")]))
DTYPES = {"events": EVENT_DTYPE, "features": FEATURE_DTYPE, "test_spikes": SPIKE_DTYPE}

names = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FFF), min_size=1, max_size=24)
segments = st.none() | st.builds(Segment, id=st.integers(0, 2**40), start=st.booleans(), end=st.booleans(),
                                 label=st.none() | names, name=st.none() | names)


@st.composite
def packets(draw):
    dtype_name = draw(st.sampled_from(sorted(DTYPES)))
    dtype = DTYPES[dtype_name]
    n = draw(st.integers(0, 300))
    width, height = draw(st.integers(1, 1280)), draw(st.integers(1, 720))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    raw = rng.integers(0, 256, size=n * dtype.itemsize, dtype=np.uint8)
    records = raw.view(dtype).copy()
    for axis, size in (("x", width), ("y", height)):
        if axis in dtype.names:
            records[axis] = rng.integers(0, size, n)
    records["t"] = np.sort(rng.integers(-(2**62), 2**62, n))
    header = Header(stream=draw(names), seq=draw(st.integers(0, 2**62)), dtype=dtype_name, width=width,
                    height=height, t_first=int(records["t"][0]) if n else 0,
                    t_last=int(records["t"][-1]) if n else 0, count=n,
                    clock=draw(st.sampled_from(["sensor", "host", "DVXplorer_DXB00010"])),
                    sent_ns=draw(st.integers(0, 2**63 - 1)), kind=DATA, segment=draw(segments))
    return Packet(header, records)


def roundtrip(packet: Packet) -> Packet:
    return wire.decode([bytes(memoryview(f)) for f in wire.encode(packet)])


@settings(max_examples=300, deadline=None)
@given(packets())
def test_packet_round_trip_is_exact(packet):
    back = roundtrip(packet)
    assert back.header == packet.header
    assert back.records.dtype == packet.records.dtype
    assert back.records.tobytes() == packet.records.tobytes()


@settings(max_examples=100, deadline=None)
@given(names, st.integers(0, 2**40), st.lists(st.dictionaries(names, st.integers() | names | st.none(), max_size=4),
                                              max_size=5), segments)
def test_json_packet_round_trip(stream, seq, records, segment):
    packet = json_packet(stream, seq, records, t=123, segment=segment)
    back = roundtrip(packet)
    assert back.header == packet.header
    assert back.records == records


def test_stamped_changes_stream_seq_and_origin_and_keeps_every_other_field():
    header = Header(*(f"value {i}" for i in range(len(dataclasses.fields(Header)))))
    assert header.stamped("out", 7, 9) == dataclasses.replace(header, stream="out", seq=7, origin_ns=9)


def test_eos_round_trip():
    back = roundtrip(eos_packet("camera", 41))
    assert back.is_eos and back.header.kind == EOS and back.header.seq == 41 and len(back) == 0


def test_real_recording_payload_is_the_record_buffer():
    reader, events = read_all(AEDAT4_SAMPLE)
    chunk = events[:5000]
    packet = Packet(Header("dvx", 7, "events", reader.width, reader.height, int(chunk["t"][0]),
                           int(chunk["t"][-1]), len(chunk)), chunk)
    topic, head, payload = wire.encode(packet)
    assert topic == b"dvx"
    assert json.loads(head)["itemsize"] == 16
    assert isinstance(payload, memoryview)
    assert np.shares_memory(np.frombuffer(payload, dtype=np.uint8), chunk)  # no copy on send
    back = roundtrip(packet)
    np.testing.assert_array_equal(back.records, chunk)


@pytest.mark.parametrize("frames, reason", [
    ([b"s", b"{}"], "frame_count"),
    ([b"s", b"\xff\xfe not json", b""], "header"),
    ([b"s", b"[1, 2]", b""], "header"),
])
def test_decode_rejects_with_reason(frames, reason):
    with pytest.raises(wire.Malformed) as info:
        wire.decode(frames)
    assert info.value.reason == reason


@st.composite
def batches(draw):
    """2 to 8 consecutive packets of one stream: one layout, sensor size and clock, each with
    its own count (empty ones included), times, origin and segment marker."""
    first = draw(packets())
    n = draw(st.integers(2, 8))
    dtype = DTYPES[first.header.dtype]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    out = []
    for i in range(n):
        count = int(rng.integers(0, 50))
        records = rng.integers(0, 256, size=count * dtype.itemsize, dtype=np.uint8).view(dtype).copy()
        for axis, size in (("x", first.header.width), ("y", first.header.height)):
            if axis in dtype.names:
                records[axis] = rng.integers(0, size, count)
        records["t"] = np.sort(rng.integers(0, 2**40, count))
        header = dataclasses.replace(
            first.header, seq=first.header.seq + i, count=count,
            t_first=int(records["t"][0]) if count else 0, t_last=int(records["t"][-1]) if count else 0,
            origin_ns=draw(st.integers(0, 2**63 - 1)), segment=draw(segments))
        out.append(Packet(header, records))
    return out


@settings(max_examples=150, deadline=None)
@given(batches(), st.integers(0, 2**63 - 1))
def test_a_batch_is_one_message_of_three_frames_and_decodes_to_each_packet(sent, sent_ns):
    message = [bytes(memoryview(f)) for f in wire.encode_batch(sent, sent_ns)]
    assert len(message) == 3 and message[0] == sent[0].header.stream.encode()
    assert len(message[2]) == sum(p.records.nbytes for p in sent)  # the records, one after another
    got = wire.decode_message(message)
    assert [p.header for p in got] == [dataclasses.replace(p.header, sent_ns=sent_ns) for p in sent]
    for back, packet in zip(got, sent):
        assert back.records.dtype == packet.records.dtype
        assert back.records.tobytes() == packet.records.tobytes()


def _edited(message: list[bytes], **fields) -> list[bytes]:
    head = json.loads(message[1])
    head.update(fields)
    return [message[0], json.dumps(head).encode(), message[2]]


@pytest.mark.parametrize("edit, reason", [
    (lambda m, h: _edited(m, count=h["count"][:-1] + [h["count"][-1] + 1]), "payload_size"),
    (lambda m, h: _edited(m, count=h["count"][:-1]), "header"),  # arrays of unequal length
    (lambda m, h: _edited(m, t_first=[float(t) for t in h["t_first"]]), "header"),
    (lambda m, h: _edited(m, origin_ns=[-1] * len(h["count"])), "header"),
    (lambda m, h: _edited(m, segments=[{"id": "x"}], segment=[0] * len(h["count"])), "header"),
    (lambda m, h: _edited(m, segment=[0] * len(h["count"])), "header"),  # no segment 0
    (lambda m, h: _edited(m, segments=[{"id": 1}], segment=[-1] * len(h["count"])), "header"),
    (lambda m, h: _edited(m, width=10), "bounds"),  # events of one packet beyond x = 10
    (lambda m, h: _edited(m, dtype="json", itemsize=0), "dtype"),
    (lambda m, h: [b"other"] + m[1:], "topic"),
    (lambda m, h: _edited(m, count=[sum(h["count"])], t_first=[0], t_last=[0], origin_ns=[0],
                          segment=[None]), "header"),  # a batch of one packet
    (lambda m, h: m[:2], "frame_count"),
])
def test_a_batch_is_refused_whole_when_any_part_is_bad(edit, reason):
    _, events = read_all(AEDAT4_SAMPLE)
    sent = [Packet(Header("dvx", seq, count=50, width=320, height=240), np.ascontiguousarray(
        events[seq * 50:(seq + 1) * 50])) for seq in range(3)]
    message = [bytes(memoryview(f)) for f in wire.encode_batch(sent, 1)]
    with pytest.raises(wire.Malformed) as info:
        wire.decode_message(edit(message, json.loads(message[1])))
    assert info.value.reason == reason
