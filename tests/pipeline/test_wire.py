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


def test_a_batch_message_holds_consecutive_packets_of_one_stream_and_decodes_to_each():
    _, events = read_all(AEDAT4_SAMPLE)
    chunks = [np.ascontiguousarray(events[i * 100:(i + 1) * 100]) for i in range(3)]
    sent = [Packet(Header("dvx", seq, count=100, width=320, height=240,
                          t_first=int(c["t"][0]), t_last=int(c["t"][-1])), c)
            for seq, c in enumerate(chunks)]
    message = [bytes(memoryview(f)) for f in wire.batch_frames([wire.encode(p) for p in sent])]
    assert len(message) == 7 and message[0] == b"dvx"  # the topic once, a header and payload each
    got = wire.decode_message(message)
    assert [p.header for p in got] == [p.header for p in sent]
    for back, chunk in zip(got, chunks):
        np.testing.assert_array_equal(back.records, chunk)
    assert wire.decode_message(message[:3])[0].header == sent[0].header  # one packet: 3 frames


@pytest.mark.parametrize("cut, reason", [(lambda m: m[:4], "frame_count"),
                                         (lambda m: m[:5] + [b"\x00garbage", m[6]], "header"),
                                         (lambda m: m[:5] + [bytes(memoryview(f)) for f in
                                                             wire.encode(eos_packet("dvx", 2))[1:]],
                                          "frame_count")])
def test_a_batch_is_refused_whole_when_a_part_is_bad_or_an_end_of_stream_hides_in_it(cut, reason):
    _, events = read_all(AEDAT4_SAMPLE)
    chunk = np.ascontiguousarray(events[:50])
    sent = [Packet(Header("dvx", seq, count=50, width=320, height=240), chunk) for seq in range(3)]
    message = [bytes(memoryview(f)) for f in wire.batch_frames([wire.encode(p) for p in sent])]
    with pytest.raises(wire.Malformed) as info:
        wire.decode_message(cut(message))
    assert info.value.reason == reason
