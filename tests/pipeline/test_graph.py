"""Lossless graphs over real sockets, in threads and in processes, replaying a real AEDAT4 file."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.events import EVENT_DTYPE
from pipeline.runtime.config import load
from pipeline.runtime.graph import run
from sensors.dv_events import from_dv
from tests.conftest import AEDAT4_SAMPLE
from tests.pipeline.helpers import chain_config, free_port


def dv_events() -> np.ndarray:
    """The recording's events read directly with dv-processing, as the ground truth."""
    import dv_processing as dv

    recording = dv.io.MonoCameraRecording(str(AEDAT4_SAMPLE))
    chunks = []
    while (batch := recording.getNextEventBatch()) is not None:
        chunks.append(from_dv(batch).copy())
    return np.concatenate(chunks, dtype=EVENT_DTYPE)


def data_bytes(events: np.ndarray) -> bytes:
    return np.ascontiguousarray(events).view(np.uint8).reshape(len(events), 16)[:, :13].tobytes()


def addresses(transport: str, tmp_path) -> tuple[str, str]:
    if transport == "ipc":
        return f"ipc://{tmp_path}/a.sock", f"ipc://{tmp_path}/b.sock"
    return f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"


@pytest.mark.parametrize("runner", ["threads", "processes"])
@pytest.mark.parametrize("transport", ["ipc", "tcp"])
def test_every_event_arrives_in_order_byte_identical(tmp_path, runner, transport):
    first, second = addresses(transport, tmp_path)
    out = tmp_path / "out.npy"
    path = chain_config(tmp_path / "graph.toml", AEDAT4_SAMPLE, out,
                        graph=f'name = "lossless"\nrunner = "{runner}"\nsummary = false',
                        replay="packet_us = 1000", addresses=(first, second), link="hwm = 4")
    result = run(load(path))
    assert result.ok, result.snapshots
    got = np.load(out)
    expected = dv_events()
    assert len(got) == len(expected) == 111_954
    assert got.dtype == EVENT_DTYPE
    # byte for byte, over the 13 data bytes of each record (t, x, y, p); the 3 padding bytes are
    # not data (dv-processing and numpy copies leave them unspecified, see docs/wire.md)
    assert data_bytes(got) == data_bytes(expected)
    assert np.all(np.diff(got["t"]) >= 0)
    snaps = result.snapshots
    assert snaps["replay"]["records_out"] == snaps["pass"]["records_in"] == snaps["record"]["records_in"] == 111_954
    assert snaps["replay"]["packets_out"] == snaps["record"]["packets_in"] > 500  # 1 ms packets
    assert snaps["record"]["gaps"] == snaps["pass"]["gaps"] == 0
