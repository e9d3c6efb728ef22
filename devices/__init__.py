"""Drivers for the van's hardware: GPS through gpsd, the Iridium SBD modem over serial.

Blocking library calls run in executors here, never on the event loop.
Nothing in this package knows about records, HQ or simulators.
"""
