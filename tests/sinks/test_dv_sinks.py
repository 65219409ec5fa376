"""Event outputs through a real graph: the DV-protocol server read back by a real dv-processing
NetworkReader on loopback (in a process of its own, busy when the events arrive), over TLS to
the dv_network source, and the AEDAT4 recorder read back from its file."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from pipeline.core.events import concat_records
from pipeline.core.packet import events_packet
from pipeline.nodes.sinks import DvServerParams, DvServerSink
from pipeline.runtime.config import load
from pipeline.runtime.graph import run
from sensors.network import NetworkSource
from sensors.readers import read_all
from tests.conftest import AEDAT4_SAMPLE, ROOT
from tests.pipeline.helpers import free_port, write_config

CLIENT = ROOT / "tests" / "sinks" / "dv_client.py"


def dv_client(port: int, want: int, out, pause_s: float = 0.0, tls=()) -> subprocess.Popen:
    """tests/sinks/dv_client.py in a process of its own (see there)."""
    return subprocess.Popen([sys.executable, str(CLIENT), str(port), str(want), str(pause_s),
                             str(out), *map(str, tls)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_dv_server_and_aedat4_recorder_give_back_identical_events(tmp_path, caplog):
    """0.1 ms packets: 5,900 of them, far more than the 1000 a dv-processing NetworkReader keeps
    unread; the client reads only after 2 s, and still gets every event, since the server
    merges them into DV packets of 10 ms (60 to 80 here) and serves until the client has left."""
    _, events = read_all(AEDAT4_SAMPLE)
    port = free_port()
    recorded = tmp_path / "out" / "copy.aedat4"
    config = write_config(tmp_path / "graph.toml", f"""
[graph]
summary = false

[source.replay]
type = "replay"
path = "{AEDAT4_SAMPLE}"
packet_us = 100

[sink.dv]
type = "dv_server"
port = {port}
wait_s = 60.0
linger_s = 60.0

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
    client = dv_client(port, len(events), tmp_path / "got.npy", pause_s=2.0)
    caplog.set_level(logging.INFO, logger="pipeline.nodes.sinks")
    assert run(load(config)).ok
    out, _ = client.communicate(timeout=60)
    assert out.splitlines() == ["connected", f"received {len(events)}"]
    got = np.load(tmp_path / "got.npy")
    assert got.dtype == events.dtype and (got == events).all()
    summary = [r.getMessage() for r in caplog.records if "DV writer" in r.getMessage()]
    assert len(summary) == 1 and summary[0].startswith(
        f"dv: {len(events)} of {len(events)} events written to the DV writer in ")
    assert summary[0].endswith(" packets, 0 of them while no client was connected (delivered to nobody)")
    assert int(summary[0].split(" packets")[0].rsplit(" ", 1)[1]) < 100
    reader, copy = read_all(recorded)
    assert (reader.width, reader.height) == (320, 240)
    assert len(copy) == len(events) and (copy == events).all()


def test_a_dv_client_that_leaves_mid_stream_does_not_stop_the_sink(tmp_path):
    _, events = read_all(AEDAT4_SAMPLE)
    port = free_port()
    sink = DvServerSink("dv", DvServerParams(port=port, width=320, height=240, wait_s=60))
    client = dv_client(port, 10_000, tmp_path / "got.npy")  # leaves after 10,000 events
    try:
        for k, start in enumerate(range(0, len(events), 5_000)):
            sink.consume(events_packet("dvx", k, events[start:start + 5_000], 320, 240))
            if k == 3:
                out, _ = client.communicate(timeout=60)  # the client has read its share and gone
    finally:
        sink.close()
    got = np.load(tmp_path / "got.npy")
    assert out.splitlines() == ["connected", f"received {len(got)}"]
    assert sink.sent == sink.written == len(events)
    assert 10_000 <= len(got) < len(events)
    assert (got == events[:len(got)]).all()
    assert sink.proc is None  # the helper process ended


@pytest.fixture
def tls_files(tmp_path):
    """PEM files made with the openssl program: a CA, the server's and a client's certificates
    signed by it, and a stranger's self-signed certificate; name -> (certificate, key)."""
    folder = tmp_path / "tls"
    folder.mkdir()

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    for name in ("ca", "stranger"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
                "-out", f"{name}.pem", "-days", "1", "-subj", f"/CN=evpipe test {name}")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                f"{name}.csr", "-subj", "/CN=127.0.0.1")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "1")
    return {name: (folder / f"{name}.pem", folder / f"{name}.key")
            for name in ("ca", "server", "client", "stranger")}


def test_over_tls_only_a_client_the_ca_signed_receives_the_events(tmp_path, tls_files):
    _, events = read_all(AEDAT4_SAMPLE)
    port = free_port()
    (certificate, key), (ca, _) = tls_files["server"], tls_files["ca"]
    params = DvServerParams(port=port, width=320, height=240, wait_s=60, tls_certificate=str(certificate),
                            tls_key=str(key), tls_ca=str(ca))
    params.check()
    stranger = dv_client(port, 1, tmp_path / "stranger.npy", tls=tls_files["stranger"])
    sink = DvServerSink("dv", params)
    source = NetworkSource("dv", port=port, tls_certificate=str(tls_files["client"][0]),
                           tls_key=str(tls_files["client"][1]), backoff_s=0.05, retries=100)
    assert source.describe() == f"tls://127.0.0.1:{port}"
    received = []

    def read():
        for packet in source.packets():
            received.append(packet.records.copy())
            if sum(map(len, received)) >= len(events):
                source.stop()

    client = threading.Thread(target=read, daemon=True)
    client.start()
    try:
        for k, start in enumerate(range(0, len(events), 5_000)):
            sink.consume(events_packet("dvx", k, events[start:start + 5_000], 320, 240))
        client.join(30)
    finally:
        source.stop()
        sink.close()
        stranger_out, _ = stranger.communicate(timeout=30)
    assert not client.is_alive()
    got = concat_records(received)
    assert len(got) == len(events) and (got == events).all()
    assert stranger.returncode == 1 and stranger_out.startswith("refused: ") and "unknown ca" in stranger_out
    assert sink.written == len(events) and sink.unheard == 0


def test_tls_files_that_do_not_exist_are_a_param_error_naming_the_file(tmp_path):
    with pytest.raises(ValueError, match=rf"tls_key: {tmp_path / 'nope.key'}: no such file"):
        DvServerParams(tls_certificate=str(AEDAT4_SAMPLE), tls_key=str(tmp_path / "nope.key"),
                       tls_ca=str(AEDAT4_SAMPLE)).check()
    with pytest.raises(ValueError, match="tls_ca: a TLS DV server names"):
        DvServerParams(tls_certificate=str(AEDAT4_SAMPLE), tls_key=str(AEDAT4_SAMPLE)).check()
