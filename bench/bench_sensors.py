"""Sensors: decode throughput per format against the underlying or peer library called
directly in the same run, and replay pacing accuracy at x1 and x10.

Throughput is Mev/s of the best of 5 full decodes (numba compile excluded by a first run); ours
is the streaming path a replay uses (open the reader, iterate its chunks of canonical events).
Pacing replays jaer/dvs128_short.aedat (looped) for 10 s at x1 and x10 and compares each packet's
release time with a bare deadline-sleep loop keeping the same schedule (see ``pacing_records``).
"""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np

from bench.common import RECORDINGS, best_of, record
from pipeline.core.events import EVENT_DTYPE
from pipeline.runtime.worker import freeze_heap
from sensors.readers import open_reader, read_all
from sensors.replay import Replay
from sensors.writers import faery_packet, write_aedat4, write_csv


def stream(path, **options) -> None:
    for _ in open_reader(path, **options).chunks():
        pass


def throughput(name, events, ours, peer, target):
    mev = events / 1e6
    ours_rate, peer_rate = mev / best_of(ours), mev / best_of(peer)
    return record(name, ours_rate, peer_rate, "Mev/s", target)


def dv_decode(path):
    import dv_processing as dv

    recording = dv.io.MonoCameraRecording(str(path))
    while (batch := recording.getNextEventBatch()) is not None:
        batch.numpy()


def faery_decode(path, **options):
    import faery

    for _ in faery.file_decoder.Decoder(path, **options):
        pass


def expelliarmus_decode(path, encoding):
    from expelliarmus import Wizard

    wizard = Wizard(encoding=encoding)
    wizard.set_file(str(path))
    wizard.read()


def pyarrow_csv_table(path):
    """pyarrow.csv's parse of a ``t,x,y,p`` CSV with a header line: the four columns as int64
    (the fastest column type it has for this file), on its own thread pool."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    return pacsv.read_csv(path, pacsv.ReadOptions(column_names=list("txyp"), skip_rows=1),
                          pacsv.ParseOptions(quote_char=False),
                          pacsv.ConvertOptions(column_types=dict.fromkeys("txyp", pa.int64()),
                                               null_values=[], strings_can_be_null=False))


def pyarrow_csv_events(path) -> np.ndarray:
    """``pyarrow_csv_table`` plus the conversion a pyarrow user adds: canonical events, x and y
    checked against the 320x240 sensor. The library peer of the CSV reader."""
    t, x, y, p = (column.to_numpy() for column in pyarrow_csv_table(path).columns)
    if not ((x >= 0) & (x < 320) & (y >= 0) & (y < 240)).all():
        raise ValueError("event outside the sensor")
    events = np.zeros(len(t), EVENT_DTYPE)
    events["t"], events["x"], events["y"], events["p"] = t, x, y, p > 0
    return events


def tonic_dvs128_events(path) -> np.ndarray:
    """tonic's generic AEDAT 2.0 reader plus the address decoding a tonic user adds (DVS128),
    as canonical events: the peer of the jAER throughput benchmark."""
    import tonic

    raw = tonic.io.get_aer_events_from_file(path, *tonic.io.read_aedat_header_from_file(path)[:2])
    address = raw["address"].astype(np.int64)
    events = np.empty(len(raw), EVENT_DTYPE)
    events["t"] = raw["timeStamp"]
    events["x"] = 127 - ((address >> 1) & 0x7F)
    events["y"] = 127 - ((address >> 8) & 0x7F)
    events["p"] = 1 - (address & 1)
    return events


def decode_records() -> list[dict]:
    import tonic

    r = RECORDINGS
    aedat4, jaer = r / "aedat4/dvxplorer_sample.aedat4", r / "jaer/dvs128_short.aedat"
    evt2, evt3, dat = r / "prophesee/evt2_sample.raw", r / "prophesee/evt3_sample.raw", r / "prophesee/NCARS_obj_004397_td.dat"
    csv = r / "eventstream/dvs_disc.csv"
    gesture = r / "gesture/clip5.bin"
    count = {p: len(read_all(p)[1]) for p in (aedat4, jaer, evt2, evt3, dat, csv, gesture)}
    tonic_dtype = np.dtype([("x", int), ("y", int), ("t", int), ("p", int)])
    return [
        throughput("aedat4 (validated) vs dv-processing", count[aedat4], lambda: stream(aedat4),
                   lambda: dv_decode(aedat4), 0.9),
        throughput("aedat4 (validate=0) vs dv-processing", count[aedat4],
                   lambda: stream(aedat4, validate=0), lambda: dv_decode(aedat4), 0.9),
        throughput("aedat4 (validated) vs faery (which also checks every packet)", count[aedat4],
                   lambda: stream(aedat4), lambda: faery_decode(aedat4), 0.9),
        throughput("prophesee evt2 vs expelliarmus", count[evt2], lambda: stream(evt2),
                   lambda: expelliarmus_decode(evt2, "evt2"), 0.9),
        throughput("prophesee evt2 vs faery", count[evt2], lambda: stream(evt2),
                   lambda: faery_decode(evt2, dimensions_fallback=(640, 480)), 0.9),
        throughput("prophesee evt3 vs expelliarmus", count[evt3], lambda: stream(evt3),
                   lambda: expelliarmus_decode(evt3, "evt3"), 0.9),
        throughput("prophesee evt3 vs faery", count[evt3], lambda: stream(evt3),
                   lambda: faery_decode(evt3), 0.9),
        throughput("prophesee dat vs expelliarmus", count[dat], lambda: stream(dat),
                   lambda: expelliarmus_decode(dat, "dat"), 0.9),
        throughput("csv vs faery csv decoder", count[csv], lambda: stream(csv),
                   lambda: faery_decode(csv, dimensions_fallback=(320, 240)), 0.9),
        throughput("csv vs pyarrow.csv read_csv + conversion to events", count[csv],
                   lambda: stream(csv), lambda: pyarrow_csv_events(csv), 1.0),
        throughput("csv vs pyarrow.csv read_csv alone (int64 columns, no checks)", count[csv],
                   lambda: stream(csv), lambda: pyarrow_csv_table(csv), None),
        throughput("jaer aedat2 vs tonic generic AEDAT reader + address decoding", count[jaer],
                   lambda: stream(jaer), lambda: tonic_dvs128_events(str(jaer)), 0.9),
        throughput("jaer aedat2 vs tonic generic AEDAT reader alone (no decoding)", count[jaer],
                   lambda: stream(jaer), lambda: tonic.io.get_aer_events_from_file(
                       str(jaer), *tonic.io.read_aedat_header_from_file(str(jaer))[:2]), None),
        throughput("nmnist-layout .bin vs tonic read_mnist_file", count[gesture],
                   lambda: stream(gesture),
                   lambda: tonic.io.read_mnist_file(str(gesture), dtype=tonic_dtype), 0.9),
    ]


def dv_write_aedat4(path, chunks, width: int, height: int) -> None:
    """dv-processing's ``MonoCameraWriter`` fed ``EventStore``s (``sensors.dv_events.to_dv``):
    the peer of the AEDAT4 writer."""
    import dv_processing as dv

    from sensors.dv_events import to_dv

    writer = dv.io.MonoCameraWriter(str(path), dv.io.MonoCameraWriter.EventOnlyConfig("evpipe", (width, height)))
    for chunk in chunks:
        writer.writeEvents(to_dv(chunk))
    del writer  # the destructor completes the file


def faery_write_csv(path, chunks, width: int, height: int) -> None:
    """faery's CSV encoder (header ``t,x@W,y@H,on``; unsigned t): the peer of the CSV writer."""
    from faery.extension import csv

    with csv.Encoder(path=str(path), separator=ord(","), header=True, dimensions=(width, height),
                     enforce_monotonic=False) as encoder:
        for chunk in chunks:
            encoder.write(faery_packet(chunk))


def write_records() -> list[dict]:
    """Writers: Mev/s of writing the DVXplorer sample (AEDAT4) and the CSV disc recording in
    10k-event chunks, as a sink receives them; the outputs go to a temporary folder."""
    out = []
    with tempfile.TemporaryDirectory() as folder:
        for name, source, ours, peer in (
                ("aedat4 write (Aedat4Writer, faery encoder) vs dv-processing MonoCameraWriter",
                 "aedat4/dvxplorer_sample.aedat4", write_aedat4, dv_write_aedat4),
                ("csv write (numpy savetxt) vs faery csv encoder", "eventstream/dvs_disc.csv",
                 write_csv, faery_write_csv)):
            reader, events = read_all(RECORDINGS / source)
            suffix = os.path.splitext(source)[1]

            def chunks():
                return (events[i:i + 10_000] for i in range(0, len(events), 10_000))

            out.append(throughput(name, len(events),
                                  lambda: ours(f"{folder}/ours{suffix}", chunks(), reader.width, reader.height),
                                  lambda: peer(f"{folder}/peer{suffix}", chunks(), reader.width, reader.height),
                                  1.0 if "aedat4" in name else None))
    return out


PACING_S = 10.0  # wall seconds of paced replay per measurement (the issue: a 10 s replay)


def drift_stats_ms(lateness_s: list[float]) -> tuple[float, float, float]:
    """Largest and 99th-percentile |lateness| (ms) and the share of releases within 1 ms."""
    late = np.abs(np.asarray(lateness_s)) * 1e3
    return float(late.max()), float(np.percentile(late, 99)), float(np.mean(late <= 1.0))


def replay_lateness(speed: float) -> tuple[list[float], list[float]]:
    """Lateness (s) of each packet of a looped, paced replay of jaer/dvs128_short.aedat
    (6.2 s of sensor time) over ``PACING_S`` wall seconds, and each packet's due time (s) after
    its segment start. Drift = wall time since the segment's first packet - sensor time since it
    / speed, measured where the packet leaves the source."""
    replay = Replay("bench", RECORDINGS / "jaer/dvs128_short.aedat", speed=speed, loop=True)
    anchor, lateness, due, begin = None, [], [], time.perf_counter()
    for packet in replay.packets():
        now = time.perf_counter()
        if now - begin > PACING_S:
            break
        if not len(packet.records):
            continue
        if packet.header.segment.start or anchor is None:
            anchor = (now, packet.header.t_last)
            continue
        sensor_s = (packet.header.t_last - anchor[1]) / 1e6 / speed
        lateness.append(now - anchor[0] - sensor_s)
        due.append(sensor_s)
    return lateness, due


def bare_lateness(due: list[float]) -> list[float]:
    """The peer: the same release times kept by a bare deadline loop (time.sleep, nothing else
    to do): the floor that this machine's scheduler allows a Python process."""
    lateness, anchor, previous = [], time.perf_counter(), 0.0
    for when in due:
        if when < previous:  # the replay looped: a new segment anchor
            anchor = time.perf_counter()
        previous = when
        while (left := anchor + when - time.perf_counter()) > 0:
            time.sleep(left)
        lateness.append(time.perf_counter() - anchor - when)
    return lateness


def pacing_records(rounds: int = 3) -> list[dict]:
    """Drift of our replay vs the bare loop at x1 and x10, alternating for ``rounds`` rounds (the
    VM's own stalls land at random, so each statistic is the median over rounds; gc frozen as in
    the node runtime). Ratio = peer / ours for the p99 and max drift, ours / peer for the share
    of packets released within 1 ms (the issue's bound)."""
    freeze_heap()
    out = []
    for speed in (1.0, 10.0):
        ours, peer = [], []
        for _ in range(rounds):
            lateness, due = replay_lateness(speed)
            ours.append(drift_stats_ms(lateness))
            peer.append(drift_stats_ms(bare_lateness(due)))
        ours, peer = np.median(ours, axis=0), np.median(peer, axis=0)
        where = f"at x{speed:g}, {PACING_S:g} s replay of dvs128_short"
        out += [record(f"replay pacing max drift {where}", ours[0], peer[0], "ms", None, peer[0] / ours[0]),
                record(f"replay pacing p99 drift {where}", ours[1], peer[1], "ms", 0.9, peer[1] / ours[1]),
                record(f"replay pacing share within 1 ms {where}", ours[2], peer[2], "fraction", 0.9)]
    return out


def run() -> list[dict]:
    return decode_records() + write_records() + pacing_records()
