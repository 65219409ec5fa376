"""DV network streams: events from DV software or any dv-processing ``NetworkWriter``.

Connects with ``dv_processing.io.NetworkReader`` over TCP (``host``, ``port``) or a UNIX socket
(``socket`` path), and reconnects with backoff when the server goes away and comes back
(see ``sensors.dv_stream``). Over TCP, ``tls_certificate`` and ``tls_key`` (PEM files) make it a
TLS client presenting that certificate; dv-processing's reader takes no CA file, so the
server's certificate is not checked (the server checks the client's: ``sensors.dv_server``).
"""

from __future__ import annotations

from sensors.dv_stream import DvSource


class NetworkSource(DvSource):
    """Events from a DV network server; ``socket`` wins over ``host``/``port`` when given."""

    def __init__(self, name: str, host: str = "127.0.0.1", port: int = 7777, socket: str = "",
                 tls_certificate: str = "", tls_key: str = "",
                 **options):  # options: those of DvSource (packet size, backoff, retries, end_on_close)
        super().__init__(name, **options)
        self.host, self.port, self.socket = host, port, socket
        self.tls = (tls_certificate, tls_key) if tls_certificate else None

    def describe(self) -> str:
        if self.socket:
            return f"unix:{self.socket}"
        return f"{'tls' if self.tls else 'tcp'}://{self.host}:{self.port}"

    def open(self):
        import dv_processing as dv

        if self.socket:
            reader = dv.io.NetworkReader(self.socket)
        else:
            reader = dv.io.NetworkReader(self.host, self.port, *(self.tls or ()))
        if not reader.isEventStreamAvailable():
            raise RuntimeError("the server sends no event stream")
        return reader
