"""`evpipe view FILE|ADDRESS... [--save out.gif]`: the live viewer on a recording or on live links."""

from __future__ import annotations

import logging
import time

import zmq

from pipeline.core.files import file_problem
from pipeline.runtime.links import LIVE, MODES, Receiver, endpoint_problem
from pipeline.ui.viewer import CLOCKS, SAVE_SUFFIXES, Viewer
from sensors.readers import FormatError, formats
from sensors.replay import Replay

NAME = "view"
HELP = "show events, time surface, output neurons and decisions of a recording or of live links"

log = logging.getLogger("evpipe")


def add_arguments(parser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="FILE|ADDRESS",
                        help="a recording (or dataset folder), or one or more link addresses "
                             "(tcp://HOST:PORT, ipc://PATH) to receive packets from: events, "
                             "snn spikes and decoder decisions")
    parser.add_argument("--save", default="", metavar="OUT",
                        help=f"draw headless and write OUT ({', '.join(SAVE_SUFFIXES)}; .mp4 needs ffmpeg)")
    parser.add_argument("--fps", type=float, default=30.0, help="redraws per second, at most (default 30)")
    parser.add_argument("--tau-ms", type=float, default=30.0, help="decay of the event frame (ms)")
    parser.add_argument("--surface-tau-ms", type=float, default=50.0, help="decay of the time surface (ms)")
    parser.add_argument("--clock", choices=CLOCKS, default=None,
                        help="frame clock: stream (sensor time; default with --save) or wall")
    parser.add_argument("--speed", type=float, default=None,
                        help="replay speed for files: 1 = real time (default), 0 = as fast as "
                             "possible (default with --save)")
    parser.add_argument("--format", default="auto", help="file format (default: detect)")
    parser.add_argument("--mode", choices=MODES, default=LIVE, help="link mode of the addresses (default live)")
    parser.add_argument("--max-frames", type=int, default=300, help="most frames in a saved video")
    parser.add_argument("--timeout", type=float, default=0.0,
                        help="stop after this many seconds (0: at end of stream or Ctrl-C)")


def _receive(addresses, mode: str, viewer: Viewer, deadline: float) -> None:
    """Feed packets from links until every one has ended (or the deadline): drain what is
    queued, then draw if due, so drawing never delays reading."""
    ctx = zmq.Context()
    receivers = [Receiver(ctx, address, mode, hwm=1000) for address in addresses]
    try:
        open_links = set(range(len(receivers)))
        while open_links and time.monotonic() < deadline:
            for i in list(open_links):
                receiver = receivers[i]
                while receiver.sock.poll(0 if viewer.events else 20, zmq.POLLIN):
                    packet = receiver.receive()
                    if packet is None:
                        continue  # malformed: counted by the receiver, logged
                    if packet.is_eos:
                        open_links.discard(i)
                        break
                    viewer.feed(packet)
            if not viewer.maybe_draw():
                time.sleep(0.001)
    finally:
        for receiver in receivers:
            receiver.close()
        ctx.term()


def main(args) -> int:
    saving = bool(args.save)
    clock = args.clock or ("stream" if saving else "wall")
    deadline = time.monotonic() + args.timeout if args.timeout > 0 else float("inf")
    if args.format != "auto" and args.format not in formats():
        log.error("--format: expected 'auto' or one of %s, got %r", ", ".join(sorted(formats())),
                  args.format)
        return 2
    try:
        viewer = Viewer(fps=args.fps, tau_us=args.tau_ms * 1e3, surface_tau_us=args.surface_tau_ms * 1e3,
                        save=args.save, clock=clock, max_frames=args.max_frames,
                        title=" ".join(args.inputs))
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    try:
        if len(args.inputs) == 1 and "://" not in args.inputs[0]:
            speed = args.speed if args.speed is not None else (0.0 if saving else 1.0)
            replay = Replay("view", args.inputs[0], args.format, speed)
            for packet in replay.packets():
                viewer.feed(packet)
                viewer.maybe_draw()
                if time.monotonic() > deadline:
                    break
            if replay.unreadable:  # each file's error is logged by the replay
                return 2
        elif any("://" not in item for item in args.inputs):
            log.error("give one recording, or only link addresses (tcp://..., ipc://...)")
            return 2
        elif any(endpoint_problem(address) for address in args.inputs):
            log.error("%s", next(filter(None, map(endpoint_problem, args.inputs))))
            return 2
        else:
            _receive(args.inputs, args.mode, viewer, deadline)
    except FormatError as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        pass
    try:
        viewer.close()
    except OSError as exc:  # --save's folder cannot be made, or the file written
        log.error("cannot write %s: %s", args.save, file_problem(exc))
        return 2
    print(f"{viewer.events:,} events in {viewer.packets:,} packets, {viewer.decisions} decisions, "
          f"{viewer.gaps} packets lost; frames {viewer.pacer.drawn} drawn, {viewer.pacer.dropped} dropped"
          + (f"; wrote {args.save}" if saving and viewer.events else ""), flush=True)
    if viewer.interactive:
        import matplotlib.pyplot as plt
        plt.show()
    return 0
