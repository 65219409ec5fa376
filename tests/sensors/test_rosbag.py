"""rosbag2 files of event_camera_msgs/EventPacket: written by the rosbag sink and by ``evpipe
convert``, read back by ``rosbags`` alone and decoded by faery; read by ``evpipe info``, ``convert``
and ``replay`` (MCAP and sqlite3) choosing the topic by name; bad files, topics and parameters
answered in one line."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from pipeline.runtime.config import ConfigError, load
from pipeline.runtime.graph import run
from sensors.event_packets import PacketEncoder
from sensors.info import info
from sensors.readers import FormatError, read_all
from sensors.replay import Replay
from sensors.rosbag import convert, typestore
from tests.conftest import ROOT
from tests.pipeline.helpers import linked, write_config

EVPIPE = [sys.executable, "-m", "pipeline.cli"]
EVT3_HEADER = b"% evt 3.0\n% format EVT3;height=720;width=1280\n% end\n"


def evpipe(*args):
    return subprocess.run(EVPIPE + [str(a) for a in args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


def one_line_error(done) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    return done.stderr


@pytest.fixture(scope="module")
def sample(recordings):
    return recordings / "prophesee" / "evt3_sample.raw"


def test_the_rosbag_sink_writes_what_rosbags_and_faery_read_back(tmp_path, sample):
    from faery.extension import evt
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    out = tmp_path / "recorded.mcap"
    config = write_config(tmp_path / "graph.toml", f"""
[graph]
summary = false
runner = "threads"

[source.camera]
type = "replay"
path = "{sample}"

[sink.bag]
type = "rosbag"
path = "{out}"
topic = "/camera/events"
frame_id = "camera"
""" + linked("camera -> bag"))
    assert run(load(config)).ok

    store = get_typestore(Stores.ROS2_KILTED)  # the type comes from the definition in the bag
    payloads, seqs = [], []
    with Reader(out) as bag:
        (connection,) = bag.connections
        assert (connection.topic, connection.msgtype) == ("/camera/events", "event_camera_msgs/msg/EventPacket")
        store.register(get_types_from_msg(connection.msgdef.data, connection.msgtype))
        for _, timestamp, raw in bag.messages():
            message = store.deserialize_cdr(raw, connection.msgtype)
            assert (message.encoding, message.width, message.height) == ("evt3", 1280, 720)
            assert message.header.frame_id == "camera" and not message.is_bigendian
            assert timestamp == message.header.stamp.sec * 10**9 + message.header.stamp.nanosec > 0
            seqs.append(message.seq)
            payloads.append(message.events.tobytes())
    assert len(seqs) > 5 and seqs == list(range(len(seqs)))

    raw = tmp_path / "payloads.raw"
    raw.write_bytes(EVT3_HEADER + b"".join(payloads))
    with evt.Decoder(raw, (1280, 720), None) as decoder:
        theirs = np.concatenate([p["events"] for p in decoder if "events" in p])
    _, source = read_all(sample)
    assert len(theirs) == len(source)
    for ours, field in (("t", "t"), ("x", "x"), ("y", "y"), ("p", "on")):
        assert (source[ours] == theirs[field].astype(np.int64)).all(), field


def write_sqlite_bag(path, recordings, encoding: str = "evt3") -> dict[str, np.ndarray]:
    """A rosbag2 folder in sqlite3 storage, written with rosbags: two EventPacket topics (two real
    recordings, 5,000 events a message) and a std_msgs/String topic. Returns the events by topic."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    store = typestore(path)
    EventPacket = store.types["event_camera_msgs/msg/EventPacket"]
    Header, Time = store.types["std_msgs/msg/Header"], store.types["builtin_interfaces/msg/Time"]
    String = store.types["std_msgs/msg/String"]
    topics = {"/left/events": "evt3_sample.raw", "/right/events": "evt3_test_pedestrians.raw"}
    events = {topic: read_all(recordings / "prophesee" / name)[1] for topic, name in topics.items()}
    with Writer(path, version=9, storage_plugin=StoragePlugin.SQLITE3) as bag:
        note = bag.add_connection("/notes", "std_msgs/msg/String", typestore=store)
        bag.write(note, 1, store.serialize_cdr(String(data="not events"), "std_msgs/msg/String"))
        for topic, records in events.items():
            connection = bag.add_connection(topic, "event_camera_msgs/msg/EventPacket", typestore=store)
            encoder = PacketEncoder(1280, 720)
            for start in range(0, len(records), 5000):
                fields = encoder.fields(records[start:start + 5000])
                fields.update(encoding=encoding, events=np.frombuffer(fields["events"], np.uint8))
                stamp = int(records["t"][start]) * 1000
                message = EventPacket(header=Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9),
                                                    frame_id=""), **fields)
                bag.write(connection, stamp, store.serialize_cdr(message, "event_camera_msgs/msg/EventPacket"))
    return events


def test_info_convert_and_replay_choose_the_topic_by_name(tmp_path, recordings):
    bag = tmp_path / "two_cameras"
    events = write_sqlite_bag(bag, recordings)
    done = evpipe("info", bag, "--topic", "/right/events", "--json")
    assert done.returncode == 0, done.stderr
    assert '"format": "rosbag2"' in done.stdout and '"events": 5000' in done.stdout
    assert '"streams": ["/left/events"]' in done.stdout
    alone = info(next(bag.glob("*.db3")), "rosbag2:/left/events")  # the sqlite3 file alone
    assert (alone["events"], alone["streams"]) == (len(events["/left/events"]), ["/right/events"])

    assert "2 event_camera_msgs/msg/EventPacket topics (/left/events, /right/events)" in \
        one_line_error(evpipe("info", bag))
    with pytest.raises(FormatError, match="no event_camera_msgs/msg/EventPacket topic '/notes'"):
        info(bag, "rosbag2:/notes")

    out = tmp_path / "left.mcap"
    done = evpipe("convert", bag, out, "--topic", "/left/events")
    assert done.returncode == 0, done.stderr
    reader, converted = read_all(out, "rosbag2:/left/events")  # written on the topic read
    assert (reader.width, reader.height, len(converted)) == (1280, 720, len(events["/left/events"]))
    assert all((converted[k] == events["/left/events"][k]).all() for k in "txyp")

    default = tmp_path / "default.mcap"
    convert(recordings / "prophesee" / "evt3_test_pedestrians.raw", default)
    _, again = read_all(default, "rosbag2:/events")
    assert all((again[k] == events["/right/events"][k]).all() for k in "txyp")

    replayed = list(Replay("bag", out, format="rosbag2:/left/events", packet_us=0).packets())
    assert sum(len(p.records) for p in replayed) == len(events["/left/events"])


def test_a_recording_stamped_in_unix_time_converts_exactly_and_compactly(tmp_path, recordings):
    """The DVXplorer sample's times are Unix time in us (about 2**50): the bag carries the wraps
    before its first event in ``time_base`` instead of stepping through them."""
    source = recordings / "aedat4" / "dvxplorer_sample.aedat4"
    out = tmp_path / "unix_time.mcap"
    convert(source, out)
    _, events = read_all(source)
    _, again = read_all(out)
    assert events["t"][0] > 1 << 50
    assert all((again[k] == events[k]).all() for k in "txyp")
    assert out.stat().st_size < 8 * len(events)  # EVT 3.0 takes at most 4 words an event


def test_bad_bags_topics_and_parameters_are_named_in_one_line(tmp_path, recordings, sample):
    corrupt = tmp_path / "corrupt.mcap"
    corrupt.write_bytes(b"\x89MCAP0\r\n" + bytes(range(256)) * 4)
    assert "corrupt.mcap: not a readable rosbag2 file" in one_line_error(evpipe("info", corrupt))
    magic_only = tmp_path / "magic.mcap"
    magic_only.write_bytes(b"\x89MCAP0\r\n")  # cut right after its magic bytes
    with pytest.raises(FormatError, match="magic.mcap: not a readable rosbag2 file"):
        read_all(magic_only)
    broken_yaml = tmp_path / "broken_yaml"
    broken_yaml.mkdir()
    (broken_yaml / "metadata.yaml").write_text("rosbag2_bagfile_information: {version: [\n")
    with pytest.raises(FormatError, match="broken_yaml: not a readable rosbag2 file") as err:
        read_all(broken_yaml)
    assert "\n" not in str(err.value)  # the YAML parser's message spans several lines

    mono = tmp_path / "mono"
    write_sqlite_bag(mono, recordings, encoding="mono")
    with pytest.raises(FormatError, match="topic /left/events: packet seq 0: encoding 'mono' is not supported"):
        read_all(mono, "rosbag2:/left/events")

    assert "--topic picks a topic of a rosbag2 file" in one_line_error(evpipe("info", sample, "--topic", "/x"))

    for key, value, message in (("depth", "0", "depth: expected an integer >= 1"),
                                ("depth", "100000", "depth: expected an integer >= 1 and <= 10000"),
                                ("reliability", '"sometimes"', "reliability: expected one of"),
                                ("events_topic", '"events"', "events_topic: expected a ROS 2 topic")):
        config = write_config(tmp_path / "bad.toml", f"""
[source.camera]
type = "replay"
path = "{sample}"

[sink.ros]
type = "ros2"
{key} = {value}
""" + linked("camera -> ros"))
        with pytest.raises(ConfigError, match=message):
            load(config)


# Python as it is without the extra (rclpy and rosbags cannot be found), then `evpipe run` of
# each config named
WITHOUT_EXTRA = """
import sys
class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("rclpy", "rosbags"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NotInstalled())
from pipeline.cli.main import main
print([main(["run", config]) for config in sys.argv[1:]])
"""


def test_without_the_extra_the_node_types_name_it(tmp_path, sample):
    replay = f'[source.camera]\ntype = "replay"\npath = "{sample}"\n'
    configs = [write_config(tmp_path / f"{name}.toml", text) for name, text in (
        ("ros2", replay + '[sink.ros]\ntype = "ros2"\n' + linked("camera -> ros")),
        ("rosbag", replay + f'[sink.bag]\ntype = "rosbag"\npath = "{tmp_path}/x.mcap"\n'
         + linked("camera -> bag")),
        ("ros2_source", f'[source.ros]\ntype = "ros2_source"\n[sink.out]\ntype = "npy"\n'
                        f'path = "{tmp_path}/out.npy"\n' + linked("ros -> out")))]
    done = subprocess.run([sys.executable, "-c", WITHOUT_EXTRA, *map(str, configs)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.stdout.strip() == "[2, 2, 2]" and "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 3, done.stderr
    for config, line in zip(configs, lines):
        assert config.name in line and "needs the 'ros2' extra" in line
        assert "pip install -e '.[ros2]'" in line
