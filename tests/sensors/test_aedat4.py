"""AEDAT 4.0: the container check in front of dv-processing (sensors/aedat4_container.py).

dv-processing 2.0 hangs for ever on an LZ4 error in an event payload or in the FileDataTable,
and segfaults on a bad EventPacket flatbuffer; each such corruption of the real DVXplorer sample
must instead give a FormatError naming the bad packet's byte offset, quickly. Reads that could
hang run in a child process under a timeout, so a regression fails instead of hanging the suite.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import threading

import numpy as np
import pytest

from sensors.aedat4_container import lz4_frame, read_container, xxh32
from sensors.readers import FormatError, open_reader, read_all
from tests.conftest import ROOT

SAMPLE = "aedat4/dvxplorer_sample.aedat4"
EVENT_STREAM = 0  # the sample's streams: 0 events, 2 imu, 3 triggers
CHILD_SECONDS = 120  # for all the files read by one child, about 0.1 s each when nothing hangs
DV_HANG_SECONDS = 5

READ_IN_CHILD = """
import json, sys
from sensors.readers import FormatError, read_all
for path in sys.argv[1:]:
    try:
        print(json.dumps({"events": len(read_all(path)[1])}), flush=True)
    except FormatError as exc:
        print(json.dumps({"offset": exc.offset, "problem": exc.problem}), flush=True)
"""

DV_IN_CHILD = """
import sys, dv_processing as dv
recording = dv.io.MonoCameraRecording(sys.argv[1])
while recording.getNextEventBatch() is not None:
    pass
"""


def read_in_child(paths) -> list[dict]:
    """What reading each path gives ({"events": n} or the FormatError's offset and problem)."""
    done = subprocess.run([sys.executable, "-c", READ_IN_CHILD, *map(str, paths)], cwd=ROOT, capture_output=True,
                          text=True, timeout=CHILD_SECONDS)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def packets(data: bytes) -> list[tuple[int, int, int]]:
    """(header offset, stream id, payload size) of each packet, walked up to the FileDataTable."""
    position = 18 + struct.unpack_from("<I", data, 14)[0]
    found = []
    while position + 8 <= len(data):
        stream, size = struct.unpack_from("<ii", data, position)
        if stream not in (0, 2, 3) or position + 8 + size > len(data):
            break
        found.append((position, stream, size))
        position += 8 + size
    return found


def lz4_stored(payload: bytes) -> bytes:
    """An LZ4 frame holding payload in stored (uncompressed) 64 KiB blocks."""
    descriptor = bytes([0x60, 0x40])  # version 1, independent blocks; 64 KiB maximum block size
    checksum = (xxh32(np.frombuffer(descriptor, np.uint8), 0, 2) >> 8) & 0xFF
    blocks = b"".join(struct.pack("<I", 0x80000000 | len(payload[i:i + 65536])) + payload[i:i + 65536]
                      for i in range(0, len(payload), 65536))
    return struct.pack("<I", 0x184D2204) + descriptor + bytes([checksum]) + blocks + bytes(4)


def lz4_decode(data: bytes, start: int, end: int) -> bytes:
    """The decoded bytes of the LZ4 frame data[start:end], by the module's own decoder."""
    src = np.frombuffer(data, np.uint8)
    problem, size = lz4_frame(src, start, end, np.empty(0, np.uint8))
    out = np.empty(size, np.uint8)
    assert lz4_frame(src, start, end, out) == (0, size)
    return out.tobytes()


def xxh32_reference(data: bytes) -> int:
    """xxHash32 with seed 0, as its specification states it, for short and long inputs."""
    p1, p2, p3, p4, p5, mask = 2654435761, 2246822519, 3266489917, 668265263, 374761393, 0xFFFFFFFF

    def rotl(x, r):
        return ((x << r) | (x >> (32 - r))) & mask

    def lane(acc, value):
        return rotl((acc + value * p2) & mask, 13) * p1 & mask

    i = 0
    if len(data) >= 16:
        v = [(p1 + p2) & mask, p2, 0, (-p1) & mask]
        while i + 16 <= len(data):
            v = [lane(v[k], struct.unpack_from("<I", data, i + 4 * k)[0]) for k in range(4)]
            i += 16
        h = (rotl(v[0], 1) + rotl(v[1], 7) + rotl(v[2], 12) + rotl(v[3], 18)) & mask
    else:
        h = p5
    h = (h + len(data)) & mask
    while i + 4 <= len(data):
        h = rotl((h + struct.unpack_from("<I", data, i)[0] * p3) & mask, 17) * p4 & mask
        i += 4
    for byte in data[i:]:
        h = rotl((h + byte * p5) & mask, 11) * p1 & mask
    h = (h ^ (h >> 15)) * p2 & mask
    h = (h ^ (h >> 13)) * p3 & mask
    return h ^ (h >> 16)


@pytest.fixture(scope="module")
def sample(recordings) -> bytes:
    return (recordings / SAMPLE).read_bytes()


def test_reads_the_same_events_with_and_without_the_check(recordings):
    checked = read_all(recordings / SAMPLE)[1]
    trusted = read_all(recordings / SAMPLE, validate=0)[1]
    assert np.array_equal(checked, trusted)
    assert len(checked) == 111_954  # MANIFEST.md
    assert (checked["t"][0], checked["t"][-1]) == (1605537493718345, 1605537494308262)
    assert round(float(np.mean(checked["p"])), 4) == 0.4915


def test_lz4_decoder_gives_the_events_dv_processing_decodes(sample, recordings):
    header, _, size = next(p for p in packets(sample) if p[1] == EVENT_STREAM)
    decoded = lz4_decode(sample, header + 8, header + 8 + size)
    first_batch = next(open_reader(recordings / SAMPLE, validate=0).chunks())
    assert decoded[8:12] == b"EVTS" and len(decoded) == 32 + 16 * len(first_batch)
    assert decoded[32:] == first_batch.tobytes()


def test_xxh32_matches_the_reference_and_the_sample_lz4_headers(sample):
    rng = np.random.default_rng(4)
    for length in (0, 1, 3, 4, 15, 16, 17, 31, 64, 1000):
        data = rng.integers(0, 256, length, dtype=np.uint8)
        assert xxh32(data, 0, length) == xxh32_reference(data.tobytes())
    for header, _, _ in packets(sample):  # descriptor bytes 4-5, header checksum byte 6 (LZ4 frame format)
        descriptor = sample[header + 12:header + 14]
        assert (xxh32_reference(descriptor) >> 8) & 0xFF == sample[header + 14]


@pytest.mark.parametrize("compression", ["NONE", "LZ4", "LZ4_HIGH", "ZSTD", "ZSTD_HIGH"])
def test_every_dv_compression_reads_back(recordings, tmp_path, compression):
    import dv_processing as dv

    from sensors.dv_events import to_dv

    events = read_all(recordings / SAMPLE)[1]
    path = tmp_path / f"{compression}.aedat4"
    config = dv.io.MonoCameraWriter.EventOnlyConfig("cam", (320, 240), getattr(dv.CompressionType, compression))
    writer = dv.io.MonoCameraWriter(str(path), config)
    for start in range(0, len(events), 20_000):
        writer.writeEvents(to_dv(events[start:start + 20_000]))
    del writer
    assert np.array_equal(read_all(path)[1], events)


def corrupt_cases(sample: bytes, tmp_path) -> dict[str, tuple[bytes, int, str]]:
    """name -> (file bytes, byte offset the FormatError must name, words its problem must hold)."""
    walked = packets(sample)
    table = walked[-1][0] + 8 + walked[-1][2]
    header, _, size = [p for p in walked if p[1] == EVENT_STREAM][10]
    payload = header + 8
    imu_header = next(p for p in walked if p[1] == 2)[0]

    def flipped(at, mask):
        data = bytearray(sample)
        data[at] ^= mask
        return bytes(data)

    token = payload + 11  # frame header 7 bytes, block size 4 bytes, then the first sequence's token
    literals, at = sample[token] >> 4, token + 1
    while literals >= 15 and sample[at - 1] == 255 or at == token + 1 and literals == 15:
        literals += sample[at]
        at += 1
    match_offset = at + literals  # uint16 distance back of the first match
    decoded_table = lz4_decode(sample, table, len(sample))
    entry = decoded_table.index(struct.pack("<q", payload))
    moved = decoded_table[:entry] + struct.pack("<q", payload + 1) + decoded_table[entry + 8:]
    return {
        # dv-processing hangs on these (an LZ4 error, retried for ever)
        "lz4 block size": (flipped(payload + 9, 0x10), header, "larger than the frame's maximum block size"),
        "lz4 header checksum": (flipped(payload + 6, 0x01), header, "header checksum"),
        "lz4 match offset": (flipped(match_offset + 1, 0xF0), header, "before the start of the frame"),
        "data table lz4": (flipped(table + 6, 0x01), table, "FileDataTable"),
        "data table entry": (sample[:table] + lz4_stored(moved), header, "disagrees with its FileDataTable entry"),
        # dv-processing zero-fills 2 GiB before failing
        "ioheader size": (flipped(17, 0x80), 14, "runs past the end of the file"),
        # dv-processing reads on through the table: these only we see
        "packet size": (flipped(header + 4, 0x10), header, "disagrees with its FileDataTable entry"),
        "packet stream": (flipped(header, 0x01), header, "undeclared stream"),
        "imu packet size": (flipped(imu_header + 5, 0x01), imu_header, "disagrees"),
        # truncated
        "cut in the header": (sample[:16], 16, "truncated"),
        "cut in the ioheader": (sample[:1000], 14, "runs past the end of the file"),
        "cut in the packets": (sample[:payload + 100], payload + 100, "before its FileDataTable"),
        "cut in the data table": (sample[:table + 100], table, "ends before its end mark"),
        "wrong version": (b"#!AER-DAT4.0\n\r" + sample[14:], 0, "unsupported AEDAT version"),
    }


def test_each_corruption_is_a_format_error_at_its_packet(sample, tmp_path):
    cases = corrupt_cases(sample, tmp_path)
    paths = []
    for n, (data, _, _) in enumerate(cases.values()):
        paths.append(tmp_path / f"case{n}.aedat4")
        paths[-1].write_bytes(data)
    for (name, (_, offset, words)), got in zip(cases.items(), read_in_child(paths), strict=True):
        assert got.get("offset") == offset and words in got.get("problem", ""), (name, got)


def test_a_file_without_data_table_is_checked_whole(sample, tmp_path):
    """dv-processing rebuilds a missing table by decoding every packet, hanging on LZ4 errors."""
    walked = packets(sample)
    table = walked[-1][0] + 8 + walked[-1][2]
    position = sample.index(struct.pack("<q", table), 18, 18 + struct.unpack_from("<I", sample, 14)[0])
    untabled = sample[:position] + struct.pack("<q", -1) + sample[position + 8:table]
    header = [p for p in walked if p[1] == EVENT_STREAM][20][0]
    broken = bytearray(untabled)
    broken[header + 8 + 6] ^= 1  # the LZ4 frame header checksum
    imu = bytearray(untabled)
    imu_header = [p for p in walked if p[1] == 2][5][0]
    imu[imu_header + 8 + 6] ^= 1
    paths = [tmp_path / "untabled.aedat4", tmp_path / "broken.aedat4", tmp_path / "imu.aedat4"]
    for path, data in zip(paths, (untabled, bytes(broken), bytes(imu))):
        path.write_bytes(data)
    whole, bad, bad_imu = read_in_child(paths)
    assert whole == {"events": 111_954}
    assert bad["offset"] == header and "header checksum" in bad["problem"]
    assert bad_imu["offset"] == imu_header and "header checksum" in bad_imu["problem"]


def test_a_bad_event_vector_length_is_caught_before_dv_processing_unpacks_it(recordings, tmp_path):
    """Stored (uncompressed) payloads: dv-processing segfaults on a vector running past its packet."""
    import dv_processing as dv

    from sensors.dv_events import to_dv

    events = read_all(recordings / SAMPLE)[1]
    path = tmp_path / "stored.aedat4"
    writer = dv.io.MonoCameraWriter(str(path), dv.io.MonoCameraWriter.EventOnlyConfig(
        "cam", (320, 240), dv.CompressionType.NONE))
    for start in range(0, len(events), 10_000):
        writer.writeEvents(to_dv(events[start:start + 10_000]))
    del writer
    data = bytearray(path.read_bytes())
    header = [p for p in packets(bytes(data)) if p[1] == EVENT_STREAM][3][0]
    data[header + 8 + 30] ^= 0x10  # vector length (decoded bytes 28-31) + 2^20 events
    path.write_bytes(bytes(data))
    got, = read_in_child([path])
    assert got["offset"] == header and "vector out of bounds" in got["problem"]


def test_dv_processing_alone_hangs_on_an_lz4_error(sample, tmp_path):
    """Why the check exists: if this starts failing, dv-processing was fixed upstream."""
    data, _, _ = corrupt_cases(sample, tmp_path)["lz4 match offset"]
    path = tmp_path / "hang.aedat4"
    path.write_bytes(data)
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([sys.executable, "-c", DV_IN_CHILD, str(path)], capture_output=True, timeout=DV_HANG_SECONDS)


def test_stopping_early_stops_the_checking_thread(recordings):
    before = threading.active_count()
    chunks = open_reader(recordings / SAMPLE).chunks()
    next(chunks)
    chunks.close()
    assert threading.active_count() == before


def test_wrong_version_line_is_refused_by_name(tmp_path, sample):
    path = tmp_path / "v41.aedat4"
    path.write_bytes(b"#!AER-DAT4.1\r\n" + sample[14:])
    with pytest.raises(FormatError, match="at byte 0: unsupported AEDAT version"):
        read_container(str(path))


def test_dv_processing_refusal_is_one_line_without_its_cpp_stack_trace(tmp_path, sample):
    """dv-processing requires the .aedat4 suffix; its refusal is reported in one line, without the
    C++ source location and stack trace its exception carries."""
    path = tmp_path / "recording.bin"
    path.write_bytes(sample)
    with pytest.raises(FormatError) as err:
        read_all(path)
    message = str(err.value)
    assert message.startswith(f"{path} at byte 18: dv-processing cannot open it as AEDAT 4.0: ")
    assert "'.aedat4'" in message and "\n" not in message and "Stacktrace" not in message
