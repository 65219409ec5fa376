"""DV network streams: events from DV software or any dv-processing ``NetworkWriter``.

Connects with ``dv_processing.io.NetworkReader`` over TCP (``host``, ``port``) or a UNIX socket
(``socket`` path), and reconnects with backoff when the server goes away and comes back
(see ``sensors.dv_stream``).
"""

from __future__ import annotations

from sensors.dv_stream import DvSource


class NetworkSource(DvSource):
    """Events from a DV network server; ``socket`` wins over ``host``/``port`` when given."""

    def __init__(self, name: str, host: str = "127.0.0.1", port: int = 7777, socket: str = "",
                 **options):  # options: those of DvSource (packet size, backoff, retries, end_on_close)
        super().__init__(name, **options)
        self.host, self.port, self.socket = host, port, socket

    def describe(self) -> str:
        return f"unix:{self.socket}" if self.socket else f"tcp://{self.host}:{self.port}"

    def open(self):
        import dv_processing as dv

        reader = dv.io.NetworkReader(self.socket) if self.socket else dv.io.NetworkReader(self.host, self.port)
        if not reader.isEventStreamAvailable():
            raise RuntimeError("the server sends no event stream")
        return reader
