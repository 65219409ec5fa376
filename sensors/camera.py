"""Live iniVation cameras through ``dv_processing.io.camera`` (DVS128, DAVIS, DVXplorer).

Opens the camera with the given serial number, or the first one found; when it is unplugged or
fails, it is reopened with backoff while the graph keeps running. Packet conversion and
reconnection are ``sensors.dv_stream.DvSource``'s, shared with (and tested through) the DV
network source.
"""

from __future__ import annotations

from sensors.dv_stream import DvSource


def devices() -> list[dict]:
    """Connected cameras: serial number, model, firmware version and USB bus/address."""
    import dv_processing as dv

    return [{"serial": d.serialNumber, "model": str(d.cameraModel), "firmware": d.firmwareVersion,
             "usb": f"{d.busNumber}:{d.devAddress}"} for d in dv.io.camera.discover()]


class CameraSource(DvSource):
    """Events from a live camera; ``serial`` "" opens the first camera found."""

    def __init__(self, name: str, serial: str = "", **options):
        super().__init__(name, **options)
        self.serial = serial

    def describe(self) -> str:
        return f"camera {self.serial}" if self.serial else "the first camera found"

    def open(self):
        import dv_processing as dv

        camera = dv.io.camera.open(self.serial) if self.serial else dv.io.camera.open()
        if not camera.isEventStreamAvailable():
            raise RuntimeError(f"{camera.getCameraName()} has no event stream")
        return camera
