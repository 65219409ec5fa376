"""Lossless graphs over real sockets, in threads and in processes, replaying a real AEDAT4 file."""

from __future__ import annotations

import json
import re
import socket

import numpy as np
import pytest

from pipeline.core.events import EVENT_DTYPE, concat_records
from pipeline.runtime.config import ConfigError, load
from pipeline.runtime.graph import run
from sensors.dv_events import from_dv
from tests.conftest import AEDAT4_SAMPLE
from tests.pipeline.helpers import chain_config, free_port, write_config


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


def test_a_link_whose_tcp_port_is_taken_ends_the_threads_run_with_one_config_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"tcp://127.0.0.1:{taken.getsockname()[1]}"
        path = chain_config(tmp_path / "graph.toml", AEDAT4_SAMPLE, tmp_path / "out.npy",
                            graph='runner = "threads"\nsummary = false', addresses=("", address),
                            link="heartbeat_s = 0.1\npeer_timeout_s = 0.3")
        with pytest.raises(ConfigError, match=f"link pass->record: cannot bind {address} "
                                              r"\(Address already in use\)$"):
            run(load(path))  # ends: the workers give up on the link that never opened


@pytest.mark.parametrize("sink", ["jsonl", "npy"])
def test_a_sink_whose_file_cannot_be_created_is_one_config_error_naming_it(tmp_path, sink):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    path = write_config(tmp_path / "graph.toml", f"""
[graph]
runner = "threads"
summary = false

[source.replay]
type = "replay"
path = "{AEDAT4_SAMPLE}"

[sink.record]
type = "{sink}"
path = "{blocker / f'out.{sink}'}"

[[link]]
from = "replay"
to = "record"
""")
    with pytest.raises(ConfigError, match=f"graph.toml: sink.record: {blocker}: File exists$"):
        run(load(path))


def test_an_exactly_once_link_gives_a_restarted_receiver_each_packet_once_from_its_resume_point(tmp_path):
    """A batching exactly-once sender over a real ipc socket. The first receiver takes 150 of
    the first 200 packets, acknowledges packet 100 as its resume point and goes away; a second
    one starts at 100 while the sender, not yet aware of it, sends 200-299. The second receiver
    drops those (it waits for 100), then takes the resent 100-299: each packet once, in order."""
    import time

    import zmq

    from pipeline.core.packet import events_packet
    from pipeline.runtime.links import LOSSLESS, Receiver, Sender

    events = dv_events()[:30_000]
    chunks = [np.ascontiguousarray(events[seq * 100:(seq + 1) * 100]) for seq in range(300)]
    ctx = zmq.Context()
    address = f"ipc://{tmp_path}/once.sock"
    sender = Sender(ctx, address, LOSSLESS, hwm=1000, batch=True, exactly_once=True)
    first = Receiver(ctx, address, LOSSLESS, hwm=1000, exactly_once=True)
    for seq, chunk in enumerate(chunks[:200]):
        sender.send(events_packet("replay", seq, chunk, 320, 240))
    sender.flush()
    taken, deadline = [], time.monotonic() + 20
    while len(taken) < 150 and time.monotonic() < deadline:
        packet = first.receive(50)
        if packet is not None:
            taken.append(packet.header.seq)
    assert taken == list(range(150))
    first.resumed(100)
    monitor = sender.sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    first.close()
    assert monitor.poll(10_000), "the sender never saw the first receiver go"  # else it could
    sender.sock.disable_monitor()  # still deal packets to the first receiver, and lose them
    monitor.close()
    second = Receiver(ctx, address, LOSSLESS, hwm=1000, exactly_once=True, resume_seq=100)
    for seq, chunk in enumerate(chunks[200:], 200):
        sender.send(events_packet("replay", seq, chunk, 320, 240))
    sender.flush()
    got, deadline = [], time.monotonic() + 20
    while len(got) < 200 and time.monotonic() < deadline:
        sender.control()  # reads the acknowledgement, then the hello: sends 100-299 again
        packet = second.receive(50)
        if packet is not None:
            got.append(packet)
    assert [p.header.seq for p in got] == list(range(100, 300))
    assert data_bytes(concat_records([p.records for p in got])) == data_bytes(events[10_000:30_000])
    assert sender.stats.resent == 200 and second.stats.duplicates == 100
    sender.close()
    second.close()
    ctx.term()


def test_an_end_that_leaves_before_the_end_of_stream_says_bye_and_its_peer_does_not_wait(tmp_path):
    """Real ipc sockets, a peer timeout of 60 s: a receiver that closes before the end of stream
    says bye, so a stopping sender's end of stream gives up at once (ReceiverGone) instead of
    waiting out the timeout; a sender that closes unfinished is likewise silent at once to its
    receiver. A receiver that had the end of stream says nothing more."""
    import zmq

    from pipeline.core import wire
    from pipeline.core.packet import eos_packet, events_packet
    from pipeline.runtime.links import LOSSLESS, Receiver, ReceiverGone, Sender

    ctx = zmq.Context()
    chunk = np.ascontiguousarray(dv_events()[:100])
    links = []
    for name in ("gone", "done", "quit"):
        address = f"ipc://{tmp_path}/{name}.sock"
        links.append((Sender(ctx, address, LOSSLESS, exactly_once=True, peer_timeout_s=60.0,
                             stopping=lambda: True),
                      Receiver(ctx, address, LOSSLESS, exactly_once=True, peer_timeout_s=60.0)))
    (gone_sender, gone_receiver), (done_sender, done_receiver), (quit_sender, quit_receiver) = links
    for sender, receiver in links:
        sender.send(events_packet("replay", 0, chunk, 320, 240))
        assert receiver.receive(10_000).header.seq == 0
    gone_receiver.close()
    with pytest.raises(ReceiverGone, match=r"gone.sock unheard for ([\d.]+) s") as gave_up:
        gone_sender.send(eos_packet("replay", 1))
    unheard = float(re.search(r"unheard for ([\d.]+) s", str(gave_up.value))[1])
    assert unheard < 30.0 and gone_sender.watch.silent  # at the bye, not after 60 s
    done_sender.sock.send_multipart(wire.encode(eos_packet("replay", 1)))  # not waiting for "end"
    assert done_receiver.receive(10_000).is_eos and done_receiver.ended
    done_receiver.close()  # had its end of stream: no bye
    assert done_sender.sock.poll(10_000, zmq.POLLIN)
    assert done_sender.sock.recv() == b"end" and not done_sender.sock.poll(300, zmq.POLLIN)
    quit_sender.close()
    assert quit_receiver.receive(10_000) is None and quit_receiver.watch.silent
    for end in (gone_sender, done_sender, quit_receiver):
        end.close()
    ctx.term()


def test_a_batching_sender_sends_fewer_messages_and_every_packet_once_in_order(tmp_path):
    """A lossless batching sender over a real ipc socket, read by a bare DEALER counting the
    messages and by decoding each: every packet once and in order, in fewer messages."""
    import zmq

    from pipeline.core import wire
    from pipeline.core.packet import events_packet
    from pipeline.runtime.links import BATCH_PACKETS, LOSSLESS, Sender

    events = dv_events()[:40_000]
    ctx = zmq.Context()
    address = f"ipc://{tmp_path}/batch.sock"
    sender = Sender(ctx, address, LOSSLESS, hwm=1000, batch=True)
    reader = ctx.socket(zmq.DEALER)
    reader.connect(address)
    count = 200
    for seq in range(count):
        chunk = np.ascontiguousarray(events[seq * 200:(seq + 1) * 200])
        sender.send(events_packet("replay", seq, chunk, 320, 240))
        if seq in (100, count - 1):
            sender.flush()  # the worker flushes when it is about to wait
    messages, packets = 0, []
    while len(packets) < count:
        assert reader.poll(10_000, zmq.POLLIN), f"{len(packets)} packets of {count} arrived"
        messages += 1
        packets += wire.decode_message(reader.recv_multipart())
    assert [p.header.seq for p in packets] == list(range(count))
    assert data_bytes(concat_records([p.records for p in packets])) == data_bytes(events[:count * 200])
    assert messages <= count // BATCH_PACKETS + 3
    assert sender.stats.packets == count and sender.stats.events == count * 200
    assert not sender.held
    sender.close()
    reader.close(linger=0)
    ctx.term()


def test_a_packet_forwarded_as_is_keeps_its_header_for_the_other_nodes_that_take_it(tmp_path):
    """The replay feeds a passthrough stage and a sink in the same worker (direct calls): the
    runtime stamps what the passthrough returns with its own stream name, and the sink beside it
    still sees the replay's stream, once per packet, in order."""
    write_config(tmp_path / "fan.toml", f"""
[graph]
runner = "threads"

[source.replay]
type = "replay"
path = "{AEDAT4_SAMPLE}"

[stage.pass]
type = "passthrough"

[sink.beside]
type = "jsonl"
path = "{tmp_path / 'beside.jsonl'}"

[sink.after]
type = "jsonl"
path = "{tmp_path / 'after.jsonl'}"

[[link]]
from = "replay"
to = "pass"

[[link]]
from = "replay"
to = "beside"

[[link]]
from = "pass"
to = "after"
""")
    result = run(load(str(tmp_path / "fan.toml")))
    assert result.ok
    assert result.snapshots["beside"]["packets_in"] == result.snapshots["after"]["packets_in"] > 10
    beside = [json.loads(line) for line in (tmp_path / "beside.jsonl").read_text().splitlines()]
    after = [json.loads(line) for line in (tmp_path / "after.jsonl").read_text().splitlines()]
    assert [record["stream"] for record in beside] == ["replay"]
    assert [record["stream"] for record in after] == ["pass"]
    assert beside[0]["packets"] == after[0]["packets"] == result.snapshots["after"]["packets_in"]
