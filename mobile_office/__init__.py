"""The ``mobile-office`` command: it wires the rooms (edge, hq, sync,
devices, provisioning, firmware_sim) into one console script and runs them.

Nothing imports this package; the shared kit the rooms stand on is ``kit``.
"""

__version__ = "0.1.0"
