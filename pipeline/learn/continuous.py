"""Marker-free evaluation and calibration of the live read-out (docs/snn.md, "Live read-out").

A labelled dataset becomes one continuous stream (``sensors.continuous``: recordings back to
back with a gap of silence, optional uniform noise), cut into packets as the replay source cuts
them, and goes through the very stage objects ``evpipe run`` builds: denoise -> hots -> snn
(``segments = "activity"``) -> decoder, in-process (``run_chain``). The decisions are then matched
with what was shown: a decision belongs to the object whose onset is the latest one before it.

Scores (keys of the JSON, docs/training.md), over the objects shown:

- ``found``: objects with at least one decision (abstentions do not count);
- ``decided_once``: share of objects with exactly one decision;
- ``extra_decisions``: decisions beyond the first of each object (and any before the first);
- ``abstentions``: abstention records (objects the read-out saw but would not name);
- ``accuracy_first``: share of objects whose first decision is right (none counts as wrong);
- ``median_delay_ms``: sensor time from an object's onset to its first decision;
- ``median_event_share``: the share of the object's own events that had arrived by then.

``calibrate_live`` picks the read-out's parameters on such streams, the way ``train`` picks the
decoder's ``k``: the setting with most objects decided exactly once and right, then the earliest.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass

import numpy as np

from pipeline.core.model import LIVE_DEFAULTS, live_readout, read_training
from pipeline.core.packet import Packet, Packetizer, events_packet
from pipeline.core.stage import run_chain
from pipeline.learn.features import FeatureSpec
from pipeline.nodes.snn import SPIKE, DecoderParams, DecoderStage, SnnParams, SnnStage
from sensors.continuous import Presented, add_noise, concatenate, interleave
from sensors.replay import SegmentFile

# Calibration streams: gaps (us) between objects, and noise (events/s over the whole sensor).
CALIBRATION_GAPS_US = (0, 100_000, 300_000)
CALIBRATION_NOISE = (0.0, 2000.0)
# Candidate settings of the live read-out, searched by calibrate_live. The leads ``k`` and
# ``k_change`` are fractions of the median number of output spikes per object on the calibration
# streams (``LEAD_FRACTIONS``), so that a network firing ten times less often is offered leads ten
# times smaller; for the conversion model (about 2000 spikes per N-MNIST sample) ``k`` is about
# 16, 32, 64 or 128 spikes and ``k_change`` 64, 128 or 256. Leaks up to 200 ms serve networks
# whose units integrate a whole sample (the binary method's count thresholds).
CANDIDATES = {"leak_tau_us": (30_000.0, 50_000.0, 100_000.0, 200_000.0),
              "evidence_tau_us": (20_000.0, 50_000.0, 100_000.0), "quiet_us": (80_000.0, 95_000.0)}
LEAD_FRACTIONS = {"k": (1 / 128, 1 / 64, 1 / 32, 1 / 16), "k_change": (1 / 32, 1 / 16, 1 / 8)}


@dataclass
class Stream:
    """A continuous stream: its packets, the objects shown (ground truth) and each object's own
    event times (us), to measure how much of an object had been seen at its decision."""

    packets: list[Packet]
    shown: list[Presented]
    object_times: list[np.ndarray]


def make_stream(files: list[SegmentFile], gap_us: int, noise_rate: float = 0.0, seed: int = 0,
                packet_us: int = 1000) -> Stream:
    """``files`` (interleaved so that neighbours differ in label) as one marker-free stream of
    ``packet_us`` packets, with ``noise_rate`` events/s of noise."""
    events, shown, width, height = concatenate(interleave(files, seed), gap_us)
    object_times = [events["t"][np.searchsorted(events["t"], s.onset_us):
                                np.searchsorted(events["t"], s.end_us, side="right")].copy()
                    for s in shown]
    cutter = Packetizer(max_us=packet_us)
    chunks = cutter.push(add_noise(events, noise_rate, width, height, seed)) + cutter.flush()
    packets = [events_packet("continuous", i, chunk, width, height) for i, chunk in enumerate(chunks)]
    return Stream(packets, shown, object_times)


def features_of(model_path, stream: Stream) -> list[Packet]:
    """``stream`` through the model's own feature stages (denoise -> hots)."""
    model_path = str(model_path)
    spec = FeatureSpec(**read_training(model_path)["features"])
    return run_chain(stream.packets, spec.stages(model_path))


def spikes_of(model_path, features: list[Packet], leak_tau_us: float = 0.0) -> list[Packet]:
    """The snn stage's output on ``features``, the network made leaky (``leak_tau_us``; 0 = the
    model file's value)."""
    snn = SnnStage("snn", SnnParams(model=str(model_path), segments="activity",
                                    leak_tau_us=leak_tau_us))
    return run_chain(features, [snn])


def as_one_packet(spikes: list[Packet]) -> list[Packet]:
    """The output spikes of ``spikes`` in one packet. The live read-out decides the same in any
    packet cut (tests/kernels/test_live_readout.py), so calibration feeds the decoder once per
    candidate instead of once per millisecond."""
    records = np.concatenate([p.records[p.records["kind"] == SPIKE] for p in spikes])
    last = spikes[-1].header
    return [Packet(last.with_(t_first=int(records["t"][0]) if len(records) else last.t_last,
                              count=len(records)), records)]


def decide(model_path, spikes: list[Packet], live: dict | None = None) -> list[dict]:
    """The decoder's records over ``spikes``, with the live parameters ``live`` (keys of
    ``LIVE_DEFAULTS`` but the leak; missing ones from the model file)."""
    given = {f"live_{key}": value for key, value in (live or {}).items() if key != "leak_tau_us"}
    decoder = DecoderStage("decoder", DecoderParams(model=str(model_path), **given))
    return [record for packet in run_chain(spikes, [decoder]) for record in packet.records]


def score(decisions: list[dict], stream: Stream) -> dict:
    """How the decisions match the objects shown (the keys of this module's docstring)."""
    shown = stream.shown
    onsets = [s.onset_us for s in shown]
    per_object: list[list[dict]] = [[] for _ in shown]
    early = 0
    for record in decisions:
        if record["class"] is None:
            continue
        i = bisect.bisect_right(onsets, record["t"]) - 1
        if i < 0:
            early += 1
        else:
            per_object[i].append(record)
    firsts = [mine[0] if mine else None for mine in per_object]
    right = [first is not None and first["class_name"] == s.label for first, s in zip(firsts, shown)]
    delays = [(first["t"] - s.onset_us) / 1e3 for first, s in zip(firsts, shown) if first]
    shares = [np.searchsorted(times, first["t"], side="right") / len(times)
              for first, times in zip(firsts, stream.object_times) if first]
    n = len(shown)
    return {"objects": n,
            "found": sum(first is not None for first in firsts),
            "decided_once": sum(len(mine) == 1 for mine in per_object) / n if n else 0.0,
            "extra_decisions": early + sum(max(len(mine) - 1, 0) for mine in per_object),
            "abstentions": sum(record["class"] is None for record in decisions),
            "accuracy_first": sum(right) / n if n else 0.0,
            "right_once": sum(ok and len(mine) == 1 for ok, mine in zip(right, per_object)) / n
            if n else 0.0,
            "median_delay_ms": float(np.median(delays)) if delays else None,
            "median_event_share": float(np.median(shares)) if shares else None}


def evaluate_continuous(model_path, files: list[SegmentFile], gap_us: int,
                        noise_rate: float = 0.0, seed: int = 0) -> dict:
    """Score the model's live read-out on ``files`` shown as one marker-free stream."""
    spec = FeatureSpec(**read_training(str(model_path))["features"])
    stream = make_stream(files, gap_us, noise_rate, seed, spec.packet_us)
    result = score(decide(model_path, spikes_of(model_path, features_of(model_path, stream))), stream)
    return {**result, "gap_ms": gap_us / 1e3, "noise_events_per_s": noise_rate,
            "live": live_readout(model_path)}


def spikes_per_object(spikes: list[Packet], streams: list[Stream]) -> float:
    """Median number of output spikes between an object's onset and its last event, over the
    objects of ``streams`` (``spikes[i]``: the one packet of stream i's output spikes)."""
    counts = []
    for [packet], stream in zip(spikes, streams):
        times = packet.records["t"]
        counts += [np.count_nonzero((times >= s.onset_us) & (times <= s.end_us))
                   for s in stream.shown]
    return float(np.median(counts))


def lead_candidates(per_object: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The candidate ``k`` and ``k_change`` (whole spikes, at least 1) for a network that fires
    ``per_object`` output spikes per object: ``LEAD_FRACTIONS`` of it."""
    return tuple(tuple(float(max(1, round(per_object * f))) for f in LEAD_FRACTIONS[key])
                 for key in ("k", "k_change"))


def calibrate_live(model_path, files: list[SegmentFile], seed: int = 0) -> dict:
    """The live read-out setting (of ``CANDIDATES`` and ``lead_candidates``) that decides most
    objects of ``files`` exactly once and right, over streams with each of
    ``CALIBRATION_GAPS_US`` and ``CALIBRATION_NOISE``; ties go to the earliest median decision.
    Returns the setting (keys of ``LIVE_DEFAULTS``) plus ``table``: the mean scores of every
    candidate, and ``spikes_per_object`` for each leak (what the leads were scaled by)."""
    spec = FeatureSpec(**read_training(str(model_path))["features"])
    streams = [make_stream(files, gap, noise, seed, spec.packet_us)
               for gap, noise in itertools.product(CALIBRATION_GAPS_US, CALIBRATION_NOISE)]
    features = [features_of(model_path, stream) for stream in streams]
    table = []
    per_object = []
    for leak in CANDIDATES["leak_tau_us"]:
        spikes = [as_one_packet(spikes_of(model_path, f, leak)) for f in features]
        per_object.append({"leak_tau_us": leak, "spikes": spikes_per_object(spikes, streams)})
        ks, k_changes = lead_candidates(per_object[-1]["spikes"])
        others = (CANDIDATES["evidence_tau_us"], ks, k_changes, CANDIDATES["quiet_us"])
        for tau, k, k_change, quiet in itertools.product(*others):
            live = {"leak_tau_us": leak, "evidence_tau_us": tau, "k": k, "k_change": k_change,
                    "quiet_us": quiet}
            scores = [score(decide(model_path, s, live), stream) for s, stream in zip(spikes, streams)]
            delays = [s["median_delay_ms"] for s in scores if s["median_delay_ms"] is not None]
            table.append({**live,
                          "right_once": float(np.mean([s["right_once"] for s in scores])),
                          "decided_once": float(np.mean([s["decided_once"] for s in scores])),
                          "accuracy_first": float(np.mean([s["accuracy_first"] for s in scores])),
                          "median_delay_ms": float(np.median(delays)) if delays else None})
    best = max(table, key=lambda row: (round(row["right_once"], 6),
                                       -(row["median_delay_ms"] or float("inf"))))
    return {**{key: best[key] for key in LIVE_DEFAULTS}, "table": table,
            "spikes_per_object": per_object}


def live_graph_config(recording, model_path, out, name: str = "live") -> str:
    """config.toml text of the live graph on a recording: replay at real time -> denoise -> hots
    -> snn (``segments = "activity"``) -> decoder -> JSON lines at ``out``, worker processes,
    every event link live (a camera's links: a lagging node loses packets, the source never
    waits). Feature parameters from the model file; what tests and benchmarks of the running
    live read-out replay."""
    spec = FeatureSpec(**read_training(str(model_path))["features"])
    links = [("camera", "denoise"), ("denoise", "hots"), ("hots", "snn"), ("snn", "decoder"),
             ("decoder", "jsonl")]
    return f"""[graph]
name = "{name}"
runner = "processes"
summary = false

[source.camera]
type = "replay"
path = "{recording}"
speed = 1.0
packet_us = {spec.packet_us}

[stage.denoise]
type = "denoise"
duration_us = {spec.denoise_us}

[stage.hots]
type = "hots"
radius = {spec.radius}
tau_us = {spec.tau_us}
n_prototypes = {spec.n_prototypes}
mode = "{spec.mode}"
in_channels = 2
learn = false
prototypes = "{model_path}"

[stage.snn]
type = "snn"
model = "{model_path}"
segments = "activity"

[stage.decoder]
type = "decoder"
model = "{model_path}"

[sink.jsonl]
type = "jsonl"
path = "{out}"
""" + "".join(f'\n[[link]]\nfrom = "{a}"\nto = "{b}"\nmode = "live"\n' for a, b in links)

