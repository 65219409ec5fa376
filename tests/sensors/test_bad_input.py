"""Bad input: empty, truncated, wrong magic, unsupported versions and flipped bytes of the real
samples give a FormatError naming the file (and the byte offset, for the formats decoded here),
never a hang or another exception. Fuzz cases are bounded: a few dozen per format."""

from __future__ import annotations

import os
import struct
import zipfile

import numpy as np
import pytest

from sensors.aedat3 import write_aedat3
from sensors.common import sensor_size, split_header
from sensors.readers import FormatError, read_all

CUTS, FLIPS = 24, 24
# formats decoded by a library that reports no byte offset
NO_OFFSET = {"es", "hdf5"}


def sample_bytes(recordings, tmp_path) -> dict[str, tuple[bytes, str]]:
    """Name -> (bytes, suffix) of a real sample of every format (small prefixes of the big ones)."""
    def head(name, size=None):
        data = (recordings / name).read_bytes()
        return data if size is None else data[:size]

    csv = head("eventstream/dvs_disc.csv", 40_000)
    csv = csv[:csv.rindex(b"\n") + 1]
    _, events = read_all(recordings / "aedat4/dvxplorer_sample.aedat4")
    write_aedat3(tmp_path / "sample.aedat", events[:20_000], 320, 240, "DVXplorer Lite")
    from faery.extension import es

    with es.Encoder(tmp_path / "sample.es", "dvs", True, (320, 240)) as encoder:
        packet = np.zeros(20_000, [("t", "<u8"), ("x", "<u2"), ("y", "<u2"), ("on", "?")])
        for field, ours in (("t", "t"), ("x", "x"), ("y", "y"), ("on", "p")):
            packet[field] = events[ours][:20_000]
        encoder.write(packet)
    return {
        "aedat4": (head("aedat4/dvxplorer_sample.aedat4"), ".aedat4"),
        "aedat2": (head("jaer/dvs128_short.aedat", 200_000), ".aedat"),
        "aedat3": ((tmp_path / "sample.aedat").read_bytes(), ".aedat"),
        "evt2": (head("prophesee/evt2_sample.raw", 300_000), ".raw"),
        "evt3": (head("prophesee/evt3_sample.raw"), ".raw"),
        "dat": (head("prophesee/NCARS_obj_004397_td.dat"), ".dat"),
        "csv": (csv, ".csv"),
        "nmnist": (head("nmnist/Train/0\r/1.bin") if (recordings / "nmnist/Train/0\r/1.bin").exists()
                   else next((recordings / "nmnist/Train").glob("*/*.bin")).read_bytes(), ".bin"),
        "npy": (head("prophesee/evt3_test_pedestrians.npy"), ".npy"),
        "es": ((tmp_path / "sample.es").read_bytes(), ".es"),
    }


def check(path, name) -> None:
    """Reading ``path`` either works or raises a FormatError naming it (and an offset)."""
    try:
        read_all(path)
    except FormatError as exc:
        assert str(path) in str(exc)
        if name not in NO_OFFSET and "unrecognised format" not in str(exc):
            assert exc.offset is not None and 0 <= exc.offset <= path.stat().st_size, str(exc)


def test_fuzz_truncations_and_byte_flips(recordings, tmp_path):
    rng = np.random.default_rng(2024)
    for name, (data, suffix) in sample_bytes(recordings, tmp_path).items():
        cuts = np.unique(np.concatenate([np.arange(0, 40), rng.integers(0, len(data), CUTS)]))
        for n, cut in enumerate(cuts):
            path = tmp_path / f"{name}_cut{n}{suffix}"
            path.write_bytes(data[:cut])
            check(path, name)
        for n, at in enumerate(rng.integers(0, len(data), FLIPS)):
            flipped = bytearray(data)
            flipped[at] ^= 1 << int(rng.integers(0, 8))
            path = tmp_path / f"{name}_flip{n}{suffix}"
            path.write_bytes(bytes(flipped))
            check(path, name)


def test_empty_file_names_the_file(tmp_path):
    path = tmp_path / "empty.raw"
    path.write_bytes(b"")
    with pytest.raises(FormatError, match="empty.raw at byte 0"):
        read_all(path)


def test_truncated_evt3_word_names_its_offset(recordings, tmp_path):
    data = (recordings / "prophesee/evt3_sample.raw").read_bytes()
    path = tmp_path / "cut.raw"
    path.write_bytes(data[:-1])
    with pytest.raises(FormatError) as err:
        read_all(path)
    assert err.value.offset == len(data) - 2 and "truncated record" in str(err.value)


def test_unknown_evt3_word_type_names_its_offset(recordings, tmp_path):
    data = bytearray((recordings / "prophesee/evt3_sample.raw").read_bytes())
    _, words_start = split_header("evt3", bytes(data), b"%", b"% end")
    words_start += 200  # a word well inside the data
    data[words_start + 1] = 0x1F  # little-endian: type 0x1 does not exist in EVT 3.0
    path = tmp_path / "bad.raw"
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError) as err:
        read_all(path)
    assert err.value.offset == words_start and "unknown word type" in str(err.value)


@pytest.mark.parametrize("content,problem", [
    (b"#!AER-DAT9.9\r\n", "unsupported AEDAT version"),
    (b"% evt 4.0\n\x00\x00", "the header says EVT4, not EVT3"),
    (b"% Version 3\n% Data file containing Event2D events.\n", "unsupported DAT version"),
])
def test_unsupported_versions(tmp_path, content, problem):
    path = tmp_path / "file.bin2"
    path.write_bytes(content)
    fmt = {b"#": "aedat2", b"% e": "prophesee_evt3", b"% V": "prophesee_dat"}
    name = next(v for k, v in fmt.items() if content.startswith(k))
    with pytest.raises(FormatError, match=problem):
        read_all(path, name)


def test_wrong_magic_is_not_detected(tmp_path):
    path = tmp_path / "random.aedat4"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(FormatError, match="unrecognised format"):
        read_all(path)


def test_damaged_hdf5_metadata_names_the_file(recordings, tmp_path):
    """h5py reports a damaged B-tree as a RuntimeError; the reader turns it into a FormatError."""
    import h5py

    _, events = read_all(recordings / "prophesee/NCARS_obj_004397_td.dat")
    path = tmp_path / "damaged.h5"
    with h5py.File(path, "w") as handle:
        for field in "txyp":
            handle[f"events/{field}"] = events[field]
    data = bytearray(path.read_bytes())
    at = data.index(b"TREE")
    data[at:at + 4] = b"EERT"
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="damaged.h5: h5py cannot read it"):
        read_all(path)


@pytest.mark.parametrize("name", ["0x0", "640x0", "12xab"])
def test_a_sensor_size_without_pixels_is_refused_by_name(name):
    with pytest.raises(FormatError, match=f"unknown sensor '{name}'; use WxH"):
        sensor_size(name, "file.csv")


def test_damaged_compressed_npz_names_the_file(recordings, tmp_path):
    """numpy reports damaged deflate data as zlib.error; the reader turns it into a FormatError."""
    _, events = read_all(recordings / "prophesee/NCARS_obj_004397_td.dat")
    path = tmp_path / "damaged.npz"
    np.savez_compressed(path, events=events)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        member = archive.getinfo("events.npy")
    name_bytes, extra_bytes = struct.unpack_from("<HH", data, member.header_offset + 26)
    data[member.header_offset + 30 + name_bytes + extra_bytes] = 0xFF  # deflate block type 3
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="damaged.npz: bad .npz archive: .*invalid block type"):
        read_all(path)


def test_random_bytes_named_bin_are_not_taken_for_n_mnist(tmp_path):
    """N-MNIST has no magic: a .bin of another kind is refused by its records' time order."""
    path = tmp_path / "random.bin"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 2000, np.uint8).tobytes())
    with pytest.raises(FormatError, match="random.bin at byte .*: not N-MNIST records in time order"):
        read_all(path)


@pytest.mark.parametrize("format", ["auto", "nmnist"])
def test_a_pipe_is_refused_instead_of_waiting_for_a_writer(tmp_path, format):
    path = tmp_path / "pipe.bin"
    os.mkfifo(path)
    with pytest.raises(FormatError, match="pipe.bin: not a regular file"):
        read_all(path, format)
