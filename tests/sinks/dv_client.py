"""A DV client in a process of its own: reads events from a DV server on loopback into a .npy file.

Run as ``python dv_client.py PORT WANT PAUSE_S OUT.npy [CERTIFICATE KEY]``: connects with a
dv-processing ``NetworkReader`` (retrying for 60 s; over TLS with the PEM certificate and key
when given), prints "connected", waits PAUSE_S s before reading (a client busy elsewhere: what
arrives meanwhile waits in the reader's queue), then reads until WANT events or 5 s without
any, saves them to OUT.npy and prints "received N". A connection that fails prints
"refused: REASON" and exits with 1.
"""

import sys
import time

import dv_processing as dv
import numpy as np

from pipeline.core.events import concat_records
from sensors.dv_events import from_dv


def connect(port: int, tls: list[str]):
    deadline = time.monotonic() + 60
    while True:
        try:
            return dv.io.NetworkReader("127.0.0.1", port, *tls)
        except RuntimeError as exc:
            if "refused" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def main(port: int, want: int, pause_s: float, out: str, tls: list[str]) -> int:
    try:
        reader = connect(port, tls)
    except RuntimeError as exc:
        print(f"refused: {exc}", flush=True)
        return 1
    print("connected", flush=True)
    time.sleep(pause_s)
    chunks, count, last = [], 0, time.monotonic()
    while count < want and time.monotonic() - last < 5:
        batch = reader.getNextEventBatch()
        if batch is None:
            time.sleep(0.001)
            continue
        chunks.append(from_dv(batch).copy())
        count += len(chunks[-1])
        last = time.monotonic()
    np.save(out, concat_records(chunks))
    print(f"received {count}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5:7]))
