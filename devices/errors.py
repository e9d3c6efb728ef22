"""Exception root of the devices package."""


class DeviceError(Exception):
    """Root of every error raised by devices/."""


class GpsUnavailable(DeviceError):
    """gpsd cannot be reached or stopped answering."""


class ModemError(DeviceError):
    """The satellite modem failed a command (ERROR, bad checksum, bad answer)."""


class ModemTimeout(ModemError):
    """The modem did not answer within the command's timeout."""


class ModemGone(ModemError):
    """The serial port disappeared or cannot be opened."""


class PayloadTooLarge(ModemError):
    """An SBD payload over the module's limit; refused before touching the modem."""
