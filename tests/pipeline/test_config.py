"""Config mistakes give errors that name the file, the line and the key."""

from __future__ import annotations

import pytest

from pipeline.runtime.config import ConfigError, load, parse

GOOD = """\
[graph]
name = "t"

[source.replay]
type = "replay"
path = "recordings/nmnist"

[stage.pass]
type = "passthrough"

[sink.out]
type = "console"

[[link]]
from = "replay"
to = "pass"

[[link]]
from = "pass"
to = "out"
"""


def test_good_config_parses_into_typed_objects(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(GOOD)
    config = load(path)
    assert set(config.nodes) == {"replay", "pass", "out"}
    replay = config.nodes["replay"].params
    assert replay.path == str(tmp_path / "recordings" / "nmnist")  # relative to the config file
    assert replay.speed == 0.0 and isinstance(replay.packet_us, int)
    assert [link.name for link in config.links] == ["replay->pass", "pass->out"]
    assert config.links[0].mode == "lossless" and config.links[0].hwm == 64


@pytest.mark.parametrize("old, new, line, needle", [
    ('path = "recordings/nmnist"', 'path = "recordings/nmnist"\nspede = 2.0', 7, "source.replay.spede: unknown key"),
    ('path = "recordings/nmnist"', 'path = "recordings/nmnist"\nspeed = "fast"', 7, "source.replay.speed: expected float"),
    ('path = "recordings/nmnist"', 'path = "recordings/nmnist"\npacket_us = 1.5', 7, "source.replay.packet_us: expected int"),
    ('path = "recordings/nmnist"', 'path = "recordings/nmnist"\nloop = 1', 7, "source.replay.loop: expected bool"),
    ('type = "passthrough"', 'type = "passthru"', 9, "stage.pass.type: unknown node type 'passthru'"),
    ('type = "passthrough"', 'type = "console"', 9, "'console' is a sink, not a stage"),
    ('[stage.pass]\ntype = "passthrough"', '[stage.pass]\nkind = "passthrough"', 8, "stage.pass.type: missing"),
    ('to = "out"', 'to = "outt"', 20, "link[1].to: no node named 'outt'"),
    ('from = "pass"', 'from = "pass"\nmode = "fast"', 20, "link[1].mode: expected one of"),
    ('from = "pass"', 'from = "pass"\nhwm = "big"', 20, "link[1].hwm: expected int"),
    ('from = "pass"', 'from = "pass"\nfrum = "x"', 20, "link[1].frum: unknown key"),
    ('[graph]\nname = "t"', '[graph]\nname = "t"\nrunner = "fibers"', 3, "graph.runner: expected one of"),
    ('[graph]\nname = "t"', '[graph]\nname = "t"\nmetrics_interval_s = "1"', 3, "graph.metrics_interval_s: expected float"),
    ('[graph]', '[grahp]', 1, "grahp: unknown top-level table"),
    ('path = "recordings/nmnist"', 'path = "recordings/nmnist"\nspeed = 500.0', 7,
     "source.replay.speed: expected a number >= 0 and <= 100, got 500"),
    ('path = "recordings/nmnist"', 'path = "recordings/nmnist"\npacket_us = 99999999999999999999', 7,
     "source.replay.packet_us: expected an integer >= 0 and <= 4611686018427387904"),
    ('from = "pass"', 'from = "pass"\naddress = "127.0.0.1:5555"', 20,
     "link[1].address: expected tcp://HOST:PORT, ipc://PATH or inproc://NAME, got '127.0.0.1:5555'"),
    ('from = "pass"', 'from = "pass"\naddress = "tcp://127.0.0.1:99999"', 20,
     "link[1].address: a tcp port is 1 to 65535, got 99999"),
    ('[graph]\nname = "t"', '[graph]\nname = "t"\nmetrics_address = "tcp://localhost"', 3,
     "graph.metrics_address: expected tcp://HOST:PORT"),
])
def test_mistakes_name_key_and_line(old, new, line, needle):
    assert old in GOOD
    with pytest.raises(ConfigError) as info:
        parse(GOOD.replace(old, new, 1), "graph.toml")
    message = str(info.value)
    assert needle in message
    assert message.startswith(f"graph.toml:{line}:"), message


def test_cycle_is_reported_with_its_path():
    text = GOOD + '\n[stage.again]\ntype = "passthrough"\n\n[[link]]\nfrom = "pass"\nto = "again"\n\n' \
                  '[[link]]\nfrom = "again"\nto = "pass"\n'
    with pytest.raises(ConfigError, match=r"links form a cycle: .*pass -> again -> pass"):
        parse(text, "c.toml")


def test_dangling_nodes_and_wrong_directions():
    with pytest.raises(ConfigError, match=r"c.toml:8: stage.pass: has no output link"):
        parse(GOOD.replace('[[link]]\nfrom = "pass"\nto = "out"\n', ''), "c.toml")
    with pytest.raises(ConfigError, match=r"link\[1\].to: 'replay' is a source and has no inputs"):
        parse(GOOD.replace('to = "out"', 'to = "replay"'), "c.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse(GOOD + "\n[[link]\n", "c.toml")


def test_missing_file_names_it(tmp_path):
    with pytest.raises(ConfigError, match="nothere.toml: cannot read"):
        load(tmp_path / "nothere.toml")
