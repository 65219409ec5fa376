"""Evaluation: every sample streamed through the stage objects that ``evpipe run`` builds.

Chain (``pipeline.core.stage.run_chain``, one file at a time, on the workers of a
``pipeline.learn.cluster.Runner`` or in this process): replay packets -> "denoise" -> "hots" -> snn
-> decoder, with the stage parameters the model file records (``training`` metadata, the same
values as config.toml). Two pass-through taps observe the chain without changing it: one keeps the
SNN input indices of each sample (for the ANN and its curve), one its output spikes (for the SNN
curve). Besides the configured decoder, a second one with ``final = "always"`` gives the forced
decision at every segment end.

Metrics (keys of the JSON, docs/training.md), over samples:

- ``accuracy_final``: the forced decision at segment end (most output spikes) is right;
- ``accuracy_early``: the first early decision is right (no early decision counts as wrong);
- ``early_rate``: a decision came before the segment ended;
- ``median_event_fraction``: SNN input events seen at the sample's first decision / all its
  events (1 for a sample decided only at its end);
- ``median_decision_us``: sensor time (us) from the segment start to that first decision;
- ``accuracy_ann``: the non-spiking classifier (the converted weights run as a ReLU network) on
  the sample's whole feature vector;
- ``confusion``: counts[true class][final decision], in the model's class order;
- ``curve``: at each fraction of events seen, the accuracy of the SNN's spike-count leader (ties:
  lower class index), of the ANN on that prefix, and the shares of samples with an early
  decision and with a right early decision by then.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from pipeline.core.model import load_model, read_training
from pipeline.core.packet import Packet
from pipeline.core.stage import Stage
from pipeline.learn.cluster import Runner, Shipped, reused
from pipeline.learn.convert import ann_logits
from pipeline.learn.features import (
    DatasetError,
    FeatureSpec,
    InputTap,
    PerFile,
    prefix_features,
)
from pipeline.nodes.snn import (
    SAMPLE,
    SPIKE,
    DecoderParams,
    DecoderStage,
    SnnParams,
    SnnStage,
)
from sensors.replay import SegmentFile

FRACTIONS = tuple(round(0.05 * i, 2) for i in range(1, 21))
FINAL_RULES = ("forced", "end")


class SpikeTap(Stage):
    """A pass-through stage keeping each segment's output spikes (seen, neuron) and its input
    event count; ``on_segment(seen, neuron, total)`` runs at segment end."""

    def __init__(self, output_layer: int, on_segment):
        super().__init__("spike_tap")
        self.output_layer = output_layer
        self.on_segment = on_segment
        self.seen: list[np.ndarray] = []
        self.neuron: list[np.ndarray] = []
        self.total = 0

    def process(self, packet: Packet) -> list[Packet]:
        records, segment = packet.records, packet.header.segment
        if segment is not None and segment.start:
            self.seen, self.neuron, self.total = [], [], 0
        spikes = records[(records["kind"] == SPIKE) & (records["layer"] == self.output_layer)]
        self.seen.append(spikes["seen"])
        self.neuron.append(spikes["neuron"])
        samples = records["seen"][records["kind"] == SAMPLE]
        if len(samples):
            self.total = int(samples[-1])
        if segment is not None and segment.end:
            self.on_segment(np.concatenate(self.seen), np.concatenate(self.neuron), self.total)
        return [packet]


class Branches(Stage):
    """Feeds every packet to several decoder stages; ``records[i]`` collects the decision
    records of decoder i, exactly as it would emit them at the end of a chain."""

    def __init__(self, decoders: list[DecoderStage]):
        super().__init__("branches")
        self.decoders = decoders
        self.records: list[list[dict]] = [[] for _ in decoders]

    def take(self) -> list[list[dict]]:
        """The records collected so far, per decoder; collecting starts afresh."""
        taken, self.records = self.records, [[] for _ in self.decoders]
        return taken

    def _keep(self, i: int, packets: list[Packet]) -> None:
        for packet in packets:
            self.records[i].extend(packet.records)

    def process(self, packet: Packet) -> list[Packet]:
        for i, decoder in enumerate(self.decoders):
            self._keep(i, decoder.process(packet))
        return []

    def finish(self) -> list[Packet]:
        for i, decoder in enumerate(self.decoders):
            self._keep(i, decoder.finish())
        return []


@dataclass
class Streamed:
    """What streaming a set of samples produced: per sample its label, input event count, ANN and
    SNN predictions at each of FRACTIONS; the decision records of every decoder."""

    labels: list[str]
    events: list[int]
    ann: list[np.ndarray]
    snn: list[np.ndarray]
    records: list[list[dict]]
    classes: tuple


@dataclass(frozen=True)
class StreamJob:
    """What a worker needs to stream files: the model file (shipped by content) and the decoders
    (their ``model`` is replaced by the worker's copy of it)."""

    model: Shipped
    decoders: tuple[DecoderParams, ...]


@dataclass
class Sample:
    """One file streamed: its label, SNN input event count, ANN and SNN predictions (class
    indices) at each of FRACTIONS, and the records of each decoder (segment id 0)."""

    label: str
    events: int = 0
    ann: np.ndarray | None = None
    snn: np.ndarray | None = None
    records: list[list[dict]] | None = None


class _Streamer(PerFile):
    """denoise -> hots -> input tap -> snn -> spike tap -> every decoder, for one file at a time."""

    def __init__(self, job: StreamJob):
        path = job.model.path()
        spec = FeatureSpec(**read_training(path)["features"])
        model = load_model(path)
        self.packet_us, self.n_inputs = spec.packet_us, spec.n_inputs
        self.n_classes = len(model.classes)
        self.weights = [np.asarray(w, np.float64) for w in model.weights]
        self.convs = [model.layer_conv(l) for l in range(model.n_layers)]
        self.branches = Branches([DecoderStage("decoder", replace(p, model=path))
                                  for p in job.decoders])
        self.stages = spec.stages(path) + [
            InputTap(spec, self._inputs), SnnStage("snn", SnnParams(model=path)),
            SpikeTap(model.n_layers - 1, self._spikes), self.branches]

    def _inputs(self, idx: np.ndarray, label: str) -> None:
        x = np.array([prefix_features(idx, self.n_inputs, f) for f in FRACTIONS])
        self.result = Sample(label, ann=np.argmax(ann_logits(self.weights, x, self.convs), axis=1))

    def _spikes(self, seen: np.ndarray, neuron: np.ndarray, total: int) -> None:
        counts = [np.bincount(neuron[seen <= math.ceil(f * total)], minlength=self.n_classes)
                  for f in FRACTIONS]
        self.result.events, self.result.snn = total, np.argmax(counts, axis=1)

    def run(self, file: SegmentFile) -> Sample | None:
        self.branches.take()  # what a file whose run raised may have left
        sample = super().run(file)
        records = self.branches.take()
        if sample is not None:
            sample.records = records
        return sample


def stream_file(job: StreamJob, file: SegmentFile) -> Sample | None:
    """One file through the chain of ``_Streamer`` (built once per worker thread); None when it
    produced no packets (unreadable: the replay logged why)."""
    return reused(("stream", job), lambda: _Streamer(job)).run(file)


def stream(model_path, files: list[SegmentFile], decoders: list[DecoderParams],
           desc: str = "", runner: Runner | None = None) -> Streamed:
    """Stream ``files`` through denoise -> hots -> snn -> each of ``decoders``, mapped over
    ``runner``'s workers (default: this process) and gathered in file order; segment ids number
    the files that produced packets, as one replay of all of them would. DatasetError first,
    naming them, when some recordings' labels are not classes of the model."""
    model_path = str(model_path)
    model = load_model(model_path)
    unknown = sorted({f.label for f in files} - set(model.classes), key=str)
    if unknown:
        raise DatasetError(f"the recordings' class folders {unknown} are not classes of the model "
                           f"{model_path} {list(model.classes)}")
    job = StreamJob(Shipped.read(model_path), tuple(decoders))
    samples = [s for s in (runner or Runner()).map(stream_file, files, desc, shared=job).results
               if s is not None]
    records = [[{**r, "segment": i} for i, s in enumerate(samples) for r in s.records[d]]
               for d in range(len(decoders))]
    return Streamed([s.label for s in samples], [s.events for s in samples],
                    [s.ann for s in samples], [s.snn for s in samples], records, model.classes)


def _by_segment(records: list[dict], n: int, early: bool) -> list[dict | None]:
    """Per segment, its first early decision (``early``) or its last decision."""
    chosen: list[dict | None] = [None] * n
    for record in records:
        i = record["segment"]
        if early and record["rule"] not in FINAL_RULES and chosen[i] is None:
            chosen[i] = record
        elif not early:
            chosen[i] = record
    return chosen


def metrics(s: Streamed, decisions: list[dict], finals: list[dict]) -> dict:
    """The evaluation record (module docstring) from streamed samples, the configured decoder's
    records and the final-decision decoder's records."""
    n = len(s.labels)
    index = {c: i for i, c in enumerate(s.classes)}
    truth = np.array([index[label] for label in s.labels])
    early = _by_segment(decisions, n, early=True)
    final = _by_segment(finals, n, early=False)
    first = [e if e is not None else f for e, f in zip(early, final)]
    final_class = np.array([f["class"] for f in final])
    early_right = np.array([e is not None and e["class"] == t for e, t in zip(early, truth)])
    decided = np.array([e is not None for e in early])
    fraction = np.array([d["events"] / max(total, 1) if e is not None else 1.0
                         for d, e, total in zip(first, early, s.events)])
    confusion = np.zeros((len(s.classes), len(s.classes)), np.int64)
    np.add.at(confusion, (truth, final_class), 1)
    ann, snn = np.array(s.ann), np.array(s.snn)
    early_at = np.array([[e is not None and e["events"] <= math.ceil(f * total) for f in FRACTIONS]
                         for e, total in zip(early, s.events)])
    return {
        "n_samples": n,
        "accuracy_final": float(np.mean(final_class == truth)),
        "accuracy_early": float(np.mean(early_right)),
        "early_rate": float(np.mean(decided)),
        "median_event_fraction": float(np.median(fraction)),
        "median_decision_us": float(np.median([d["t"] - d["t_start"] for d in first])),
        "accuracy_ann": float(np.mean(ann[:, -1] == truth)),
        "confusion": confusion.tolist(),
        "curve": {
            "fraction": list(FRACTIONS),
            "snn": np.mean(snn == truth[:, None], axis=0).tolist(),
            "ann": np.mean(ann == truth[:, None], axis=0).tolist(),
            "early_decided": np.mean(early_at, axis=0).tolist(),
            "early_right": np.mean(early_at & early_right[:, None], axis=0).tolist(),
        },
    }


@dataclass
class Evaluation:
    metrics: dict
    decisions: list[dict]  # the configured decoder's records, as `evpipe run` emits them
    finals: list[dict]  # the final-decision decoder's records
    streamed: Streamed


def evaluate(model_path, files: list[SegmentFile], ks=None, desc: str = "evaluate",
             runner: Runner | None = None):
    """Evaluate the model on ``files`` with the decoder its metadata names (an ``Evaluation``);
    with ``ks``, one count-rule decoder per spike lead k instead ({k: metrics}). The files are
    mapped over ``runner``'s workers (default: this process); the result does not depend on it."""
    configured = DecoderParams(model=str(model_path), **read_training(model_path)["decoder"])
    candidates = [replace(configured, k=k) for k in ks] if ks else [configured]
    s = stream(model_path, files, candidates + [replace(configured, final="always")], desc, runner)
    finals = s.records[-1]
    if ks:
        return {k: metrics(s, records, finals) for k, records in zip(ks, s.records)}
    return Evaluation(metrics(s, s.records[0], finals), s.records[0], finals, s)


def pooled(evaluations: list[Evaluation]) -> dict:
    """Metrics over several evaluations (cross-validation folds) taken as one sample set."""
    shift, decisions, finals = 0, [], []
    labels, events, ann, snn = [], [], [], []
    for e in evaluations:
        decisions += [{**r, "segment": r["segment"] + shift} for r in e.decisions]
        finals += [{**r, "segment": r["segment"] + shift} for r in e.finals]
        shift += len(e.streamed.labels)
        labels += e.streamed.labels
        events += e.streamed.events
        ann += e.streamed.ann
        snn += e.streamed.snn
    classes = evaluations[0].streamed.classes
    return metrics(Streamed(labels, events, ann, snn, [], classes), decisions, finals)
