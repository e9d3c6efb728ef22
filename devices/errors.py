"""Exception root of the devices package."""


class DeviceError(Exception):
    """Root of every error raised by devices/."""


class GpsUnavailable(DeviceError):
    """gpsd cannot be reached or stopped answering."""
