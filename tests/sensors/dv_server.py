"""A real dv-processing NetworkWriter serving events [start, stop) of dvxplorer_sample.aedat4.

Run as ``python dv_server.py ADDRESS START STOP``: binds loopback port ADDRESS (digits) or the
UNIX socket at path ADDRESS (removing a socket file a previous server left behind), waits (at most 30 s) for a
client, writes the events in batches of 5000, waits until they left the queue, prints "sent N"
and exits with os._exit (dv-processing 2.0's writer destructor can deadlock on the GIL while a
client is connected, and a server that just goes away is what the client must survive anyway).
"""

import os
import sys
import time

import dv_processing as dv
from conftest import AEDAT4_SAMPLE

from sensors.dv_events import to_dv
from sensors.readers import read_all

BATCH = 5000


def main(address: str, start: int, stop: int) -> None:
    reader, events = read_all(AEDAT4_SAMPLE)
    stream = dv.io.Stream.EventStream(0, "events", "DVXplorer", (reader.width, reader.height))
    if address.isdigit():
        writer = dv.io.NetworkWriter("127.0.0.1", int(address), stream)
    else:
        if os.path.exists(address):
            os.unlink(address)
        writer = dv.io.NetworkWriter(address, stream)
    print("listening", flush=True)
    deadline = time.monotonic() + 30
    while writer.getClientCount() < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    for first in range(start, stop, BATCH):
        writer.writeEvents(to_dv(events[first:min(first + BATCH, stop)]))
    while writer.getQueuedPacketCount() and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.2)  # let the kernel deliver the last bytes
    print(f"sent {stop - start}", flush=True)
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
