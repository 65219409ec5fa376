"""Node parameters and links are checked when the config loads.

A value outside its declared range or ``Literal`` set, a broken rule between parameters, a file
named by a parameter that does not fit, or a link whose records the receiving node cannot use is
a config error naming file, line and key: ``evpipe run`` exits 2 with one line, starts nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
import typing

import numpy as np
import pytest

from kernels.hots import MODES as HOTS_MODES
from pipeline.core.nodetype import ParamError
from pipeline.runtime.config import ConfigError, GraphSettings, LinkSettings, parse
from pipeline.runtime.links import MODES as LINK_MODES
from pipeline.runtime.registry import all_types
from tests.conftest import AEDAT4_SAMPLE, ROOT
from tests.pipeline.helpers import linked

MODEL = ROOT / "recordings" / "model.npz"  # input: HOTS features, prototypes (50, 64)
EVPIPE = [sys.executable, "-m", "pipeline.cli"]

DEMO = f"""\
[graph]
runner = "threads"
summary = false

[source.replay]
type = "replay"
path = "{ROOT / "recordings" / "nmnist"}"

[stage.denoise]
type = "denoise"
duration_us = 20000
per_segment = true

[stage.hots]
type = "hots"
radius = 2
tau_us = 50000.0
n_prototypes = 64
mode = "all"
in_channels = 2
learn = false
prototypes = "{MODEL}"

[stage.snn]
type = "snn"
model = "{MODEL}"

[stage.decoder]
type = "decoder"
model = "{MODEL}"
rule = "count"
k = 64

[sink.jsonl]
type = "jsonl"
path = "OUT"
""" + linked("replay -> denoise", "denoise -> hots", "hots -> snn", "snn -> decoder",
             "decoder -> jsonl")

SURFACE = f"""\
[graph]
runner = "threads"
summary = false

[source.replay]
type = "replay"
path = "{AEDAT4_SAMPLE}"

[stage.surface]
type = "time_surface"
tau_us = 30000.0

[sink.record]
type = "npy"
path = "OUT"

[[link]]
from = "replay"
to = "surface"

[[link]]
from = "surface"
to = "record"
"""


def line_of(text: str, needle: str) -> int:
    """1-based number of the line of ``text`` holding ``needle`` (which must occur once)."""
    hits = [number for number, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(hits) == 1, (needle, hits)
    return hits[0]


def edited(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def test_the_graphs_these_tests_break_are_valid(tmp_path):
    demo = parse(DEMO.replace("OUT", str(tmp_path / "d.jsonl")), "demo.toml")
    assert demo.nodes["hots"].params.radius == 2 and demo.nodes["decoder"].params.k == 64
    surface = parse(SURFACE.replace("OUT", str(tmp_path / "s.npy")), "surface.toml")
    assert surface.nodes["surface"].params.tau_us == 30000.0


@pytest.mark.parametrize("graph, old, new, message", [
    (SURFACE, "tau_us = 30000.0", "tau_us = -5", "stage.surface.tau_us: expected a number > 0, got -5"),
    (DEMO, "tau_us = 50000.0", "tau_us = -5", "stage.hots.tau_us: expected a number > 0, got -5"),
    (DEMO, "duration_us = 20000", "duration_us = -20000",
     "stage.denoise.duration_us: expected an integer >= 1, got -20000"),
    (DEMO, 'rule = "count"', 'rule = "majority"',
     "stage.decoder.rule: expected one of 'first', 'count', 'rate', 'margin', got 'majority'"),
    (DEMO, "k = 64", "k = 0", "stage.decoder.k: expected an integer >= 1, got 0"),
    (DEMO, 'mode = "all"', 'mode = "bogus"',
     "stage.hots.mode: expected one of 'same', 'all', 'merge', got 'bogus'"),
    (DEMO, "radius = 2", "radius = -1", "stage.hots.radius: expected an integer >= 0, got -1"),
], ids=["time_surface-tau", "hots-tau", "denoise-duration", "decoder-rule", "decoder-k", "hots-mode",
        "hots-radius"])
def test_bad_parameter_stops_evpipe_run_at_load(tmp_path, graph, old, new, message):
    out = tmp_path / "out.file"
    config = tmp_path / "bad.toml"
    text = edited(graph.replace("OUT", str(out)), old, new)
    config.write_text(text)
    done = subprocess.run(EVPIPE + ["run", str(config)], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].endswith(f"{config}:{line_of(text, new)}: {message}"), lines[0]
    assert done.stdout == "" and not out.exists()  # nothing ran


@pytest.mark.parametrize("old, new, key, needle", [
    ("radius = 2", "radius = 3", "radius = 3",
     "stage.hots.radius: radius 3 with mode 'all' and in_channels 2 makes surfaces of 98 values, "
     "but the prototypes in"),
    ('mode = "all"', 'mode = "same"', "radius = 2", "stage.hots.radius: radius 2 with mode 'same'"),
    ("n_prototypes = 64", "n_prototypes = 32", "n_prototypes = 32",
     "stage.hots.n_prototypes: " + f"{MODEL} holds 64 prototypes, got n_prototypes = 32"),
    (f'prototypes = "{MODEL}"\n', "", "[stage.hots]", "stage.hots.prototypes: required when learn is false"),
    (f'prototypes = "{MODEL}"', 'prototypes = "nowhere.npy"', 'prototypes = "nowhere.npy"',
     "stage.hots.prototypes: cannot read"),
    (f'model = "{MODEL}"\n\n[stage.decoder]', 'model = "nowhere.npz"\n\n[stage.decoder]', 'model = "nowhere.npz"',
     "stage.snn.model: "),
    ('path = "OUT"', 'path = ""', 'path = ""', "sink.jsonl.path: required: output file"),
    ("per_segment = true", "per_segment = true\nwidth = 5", "width = 5", "stage.denoise.width: unknown key"),
])
def test_rules_and_files_name_the_parameter_and_its_line(tmp_path, old, new, key, needle):
    text = edited(DEMO, old, new)
    with pytest.raises(ConfigError) as info:
        parse(text, "demo.toml")
    message = str(info.value)
    assert needle in message and "\n" not in message, message
    assert message.startswith(f"demo.toml:{line_of(text, key)}: "), message


def test_hots_with_the_right_prototype_shape_loads():
    """The radius check compares with the real prototype array, not a guess: R = 2, mode all,
    2 channels is (5 * 5 * 2, 64), the shape stored in the model file."""
    with np.load(MODEL) as archive:
        assert archive["hots_prototypes"].shape == (50, 64)
    config = parse(DEMO.replace("OUT", "x.jsonl"), "demo.toml")
    assert config.nodes["hots"].params.prototypes == str(MODEL)


@pytest.mark.parametrize("table, old, new, needle", [
    ("graph", 'summary = false', 'summary = false\nmetrics_interval_s = 0', "graph.metrics_interval_s: expected a number > 0, got 0"),
    ("link", 'to = "jsonl"', 'to = "jsonl"\nhwm = 0', "link[4].hwm: expected an integer >= 1, got 0"),
    ("link", 'to = "jsonl"', 'to = "jsonl"\nmode = "fast"', "link[4].mode: expected one of 'lossless', 'live', got 'fast'"),
    ("source", 'type = "replay"', 'type = "replay"\nspeed = -1.0', "source.replay.speed: expected a number >= 0 and <= 100, got -1"),
    ("source", 'type = "replay"', 'type = "replay"\nwidth = 34', "source.replay.height: give width and height together"),
    ("source", 'type = "replay"', 'type = "replay"\nformat = "mp4"', "source.replay.format: expected 'auto' or one of"),
])
def test_graph_link_and_source_settings_are_checked_too(table, old, new, needle):
    text = edited(DEMO, old, new)
    with pytest.raises(ConfigError, match=f"^demo.toml:\\d+: {needle}".replace("[", r"\[").replace("(", r"\(")):
        parse(text, "demo.toml")


# ---- links --------------------------------------------------------------------------------

def chain(*nodes: tuple[str, str, str]) -> str:
    """A config of the given (section, name, extra TOML lines) nodes linked in order."""
    tables = "".join(f"[{section}.{name}]\n{body}\n\n" for section, name, body in nodes)
    links = "".join(f'[[link]]\nfrom = "{a[1]}"\nto = "{b[1]}"\n\n' for a, b in zip(nodes, nodes[1:]))
    return tables + links


REPLAY = ("source", "cam", f'type = "replay"\npath = "{AEDAT4_SAMPLE}"')
TS = ("stage", "ts", 'type = "time_surface"')
PASS = ("stage", "pass", 'type = "passthrough"')
HOTS = ("stage", "hots", 'type = "hots"')
DENOISE = ("stage", "denoise", 'type = "denoise"')
SNN = ("stage", "snn", f'type = "snn"\nmodel = "{MODEL}"')
DECODER = ("stage", "dec", f'type = "decoder"\nmodel = "{MODEL}"')
VIEWER = ("sink", "view", 'type = "viewer"\nsave = "v.gif"')
JSONL = ("sink", "file", 'type = "jsonl"\npath = "x.jsonl"')
CONSOLE = ("sink", "screen", 'type = "console"')
NPY = ("sink", "record", 'type = "npy"\npath = "x.npy"')


@pytest.mark.parametrize("nodes, link, needle", [
    ((REPLAY, TS, VIEWER), 1, "from ts to view: view (viewer) takes events, spikes, decisions (json); "
                              "ts (time_surface) emits surface"),
    ((REPLAY, TS, JSONL), 1, "from ts to file: file (jsonl) takes decisions (json), events, features; "
                             "ts (time_surface) emits surface"),
    ((REPLAY, TS, CONSOLE), 1, "from ts to screen: screen (console) takes decisions (json), events, features; "
                               "ts (time_surface) emits surface"),
    ((REPLAY, HOTS, DENOISE, NPY), 1, "from hots to denoise: denoise (denoise) takes events; "
                                      "hots (hots) emits features"),
    ((REPLAY, TS, PASS, VIEWER), 2, "from pass to view: view (viewer) takes events, spikes, decisions "
                                    "(json); pass (passthrough) emits surface"),
    ((REPLAY, SNN, DECODER, JSONL), 0, "from cam to snn: snn (snn) takes features; cam (replay) emits events"),
    ((REPLAY, HOTS, SNN, DECODER, NPY), 3, "from dec to record: record (npy) takes any record array; "
                                           "dec (decoder) emits decisions (json)"),
])
def test_links_carry_only_records_the_receiver_takes(nodes, link, needle):
    text = chain(*nodes)
    with pytest.raises(ConfigError) as info:
        parse(text, "links.toml")
    at = [number for number, line in enumerate(text.splitlines(), 1) if line == "[[link]]"][link]
    assert str(info.value) == f"links.toml:{at}: link[{link}]: {needle}"


@pytest.mark.parametrize("nodes", [
    (REPLAY, JSONL),  # per-segment summaries of an event stream
    (REPLAY, CONSOLE),
    (REPLAY, HOTS, CONSOLE),  # feature events are events too
    (REPLAY, TS, NPY),  # npy records any record array
    (REPLAY, PASS, VIEWER),
    (REPLAY, HOTS, SNN, DECODER, VIEWER),  # the model takes features; the viewer shows decisions
], ids=["events-jsonl", "events-console", "features-console", "surface-npy", "passthrough-viewer",
        "decisions-viewer"])
def test_links_that_work_still_load(nodes):
    assert len(parse(chain(*nodes), "ok.toml").links) == len(nodes) - 1


# ---- deprecated names -----------------------------------------------------------------------

SYNTHETIC = """\
[graph]
summary = false

[source.syn]
type = "synthetic"
rate = 100000.0
duration_us = 20000
speed_factor = 0.0
SPEED

[sink.record]
type = "npy"
path = "OUT"

[[link]]
from = "syn"
to = "record"
"""


def test_synthetic_speed_is_a_deprecated_name_of_speed_px_s(caplog):
    with caplog.at_level(logging.WARNING, logger="pipeline.runtime.config"):
        config = parse(SYNTHETIC.replace("SPEED", "speed = 350.0"), "s.toml")
    assert config.nodes["syn"].params.speed_px_s == 350.0
    assert [r.getMessage() for r in caplog.records] == [
        "s.toml:9: source.syn.speed: deprecated name; write speed_px_s"]
    with pytest.raises(ConfigError, match=r"^s.toml:9: source.syn.speed: deprecated name of speed_px_s; "
                                          r"give only speed_px_s"):
        parse(SYNTHETIC.replace("SPEED", "speed = 350.0\nspeed_px_s = 100.0"), "s.toml")


def test_a_config_with_the_old_speed_name_runs_as_with_the_new_one(tmp_path):
    """The same seed and speed under either name give the same events; the old name warns."""
    recorded = {}
    for name in ("speed", "speed_px_s"):
        out = tmp_path / f"{name}.npy"
        config = tmp_path / f"{name}.toml"
        config.write_text(SYNTHETIC.replace("SPEED", f"{name} = 350.0").replace("OUT", str(out)))
        done = subprocess.run(EVPIPE + ["run", str(config)], capture_output=True, text=True, cwd=ROOT,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        assert ("deprecated name; write speed_px_s" in done.stderr) == (name == "speed")
        recorded[name] = np.load(out)
    assert len(recorded["speed"]) == 2000  # 100k events/s for 20 ms
    assert np.array_equal(recorded["speed"], recorded["speed_px_s"])
    default = tmp_path / "default.npy"
    (tmp_path / "default.toml").write_text(SYNTHETIC.replace("SPEED", "").replace("OUT", str(default)))
    assert subprocess.run(EVPIPE + ["run", str(tmp_path / "default.toml")], cwd=ROOT, timeout=120).returncode == 0
    assert not np.array_equal(np.load(default), recorded["speed"])  # 200 px/s: the speed took effect


# ---- declarations -----------------------------------------------------------------------------

SETTINGS = [GraphSettings, LinkSettings] + [t.params for t in all_types().values()]


@pytest.mark.parametrize("params", SETTINGS, ids=lambda cls: cls.__name__)
def test_every_parameter_is_documented_and_every_number_bounded(params):
    assert params.__doc__ and not params.__doc__.startswith(params.__name__ + "(")  # not the dataclass default
    hints = typing.get_type_hints(params)
    for f in dataclasses.fields(params):
        assert f.metadata.get("help"), f"{params.__name__}.{f.name} has no help"
        if hints[f.name] in (int, float):
            assert f.metadata.get("bounds"), f"{params.__name__}.{f.name} declares no range"


def test_literal_and_range_checks_hold_outside_config_files_too():
    """Stages built in code (training, evaluation, tests) get the same checks."""
    params = all_types()["hots"].params
    with pytest.raises(ParamError) as info:
        params(mode="bogus")
    assert info.value.key == "mode" and "one of 'same', 'all', 'merge'" in info.value.message
    with pytest.raises(ParamError, match="^tau_us: expected a number > 0, got -5$"):
        all_types()["time_surface"].params(tau_us=-5.0)
    with pytest.raises(ParamError, match="^polarity: expected one of 0, 1, got True$"):
        all_types()["polarity_filter"].params(polarity=True)


def test_literal_sets_are_the_sets_the_code_runs():
    """The values a config may give are exactly those the link and the HOTS kernel implement."""
    assert typing.get_args(typing.get_type_hints(LinkSettings)["mode"]) == LINK_MODES
    hots = typing.get_type_hints(all_types()["hots"].params)["mode"]
    assert set(typing.get_args(hots)) == set(HOTS_MODES)
