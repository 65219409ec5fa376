"""Event outputs through a real graph: the DV-protocol server read back by a real dv-processing
NetworkReader on loopback, and the AEDAT4 recorder read back from its file."""

from __future__ import annotations

import threading
import time

from pipeline.core.events import concat_records
from pipeline.core.packet import events_packet
from pipeline.nodes.sinks import DvServerParams, DvServerSink
from pipeline.runtime.config import load
from pipeline.runtime.graph import run
from sensors.dv_events import from_dv
from sensors.readers import read_all
from tests.conftest import AEDAT4_SAMPLE
from tests.pipeline.helpers import free_port, write_config


def read_network(port: int, want: int, out: dict, stop_after: int = 0) -> None:
    """A DV client: connect (retrying until the server is up), read until ``want`` events, or
    leave after ``stop_after`` events when that is set."""
    import dv_processing as dv

    deadline = time.monotonic() + 60
    reader = None
    while reader is None and time.monotonic() < deadline:
        try:
            reader = dv.io.NetworkReader("127.0.0.1", port)
        except RuntimeError:
            time.sleep(0.05)
    out["resolution"] = reader.getEventResolution()
    chunks, count = [], 0
    while count < want and time.monotonic() < deadline:
        batch = reader.getNextEventBatch()
        if batch is None:
            time.sleep(0.001)
            continue
        chunks.append(from_dv(batch).copy())
        count += len(chunks[-1])
        if stop_after and count >= stop_after:
            break
    out["events"] = concat_records(chunks)


def test_dv_server_and_aedat4_recorder_give_back_identical_events(tmp_path):
    _, events = read_all(AEDAT4_SAMPLE)
    port = free_port()
    recorded = tmp_path / "out" / "copy.aedat4"
    config = write_config(tmp_path / "graph.toml", f"""
[graph]
summary = false

[source.replay]
type = "replay"
path = "{AEDAT4_SAMPLE}"

[sink.dv]
type = "dv_server"
port = {port}
wait_s = 60.0

[sink.recorder]
type = "aedat4"
path = "{recorded}"

[[link]]
from = "replay"
to = "dv"

[[link]]
from = "replay"
to = "recorder"
""")
    got: dict = {}
    client = threading.Thread(target=read_network, args=(port, len(events), got), daemon=True)
    client.start()
    assert run(load(config)).ok
    client.join(60)
    assert not client.is_alive()
    assert tuple(got["resolution"]) == (320, 240)
    assert got["events"].dtype == events.dtype and (got["events"] == events).all()
    reader, copy = read_all(recorded)
    assert (reader.width, reader.height) == (320, 240)
    assert len(copy) == len(events) and (copy == events).all()


def test_a_dv_client_that_leaves_mid_stream_does_not_stop_the_sink():
    _, events = read_all(AEDAT4_SAMPLE)
    port = free_port()
    sink = DvServerSink("dv", DvServerParams(port=port, width=320, height=240, wait_s=60))
    got: dict = {}
    client = threading.Thread(target=read_network, args=(port, len(events), got, 10_000), daemon=True)
    client.start()
    try:
        for k, start in enumerate(range(0, len(events), 5_000)):
            sink.consume(events_packet("dvx", k, events[start:start + 5_000], 320, 240))
            if k == 3:
                client.join(60)  # the client has read its share and gone
                assert not client.is_alive()
    finally:
        sink.close()
    assert sink.sent == len(events)
    assert 10_000 <= len(got["events"]) < len(events)
    assert (got["events"] == events[:len(got["events"])]).all()
    assert sink.proc is None  # the helper process ended
