"""Typed keys of the objects the node's handlers share (web.AppKey)."""

from __future__ import annotations

from aiohttp import web

from devices.gps import GpsTracker
from devices.modem import ModemManager
from sync.uplink import Uplink

from .attachments import Attachments
from .auth import Sessions
from .prereg import Preregistrations
from .catalog import Catalog
from .config import NodeConfig
from .service_desk import ServiceDesk
from .store import Store
from .timekeeping import GpsTimes
from .trips.lifecycle import Trips
from .visits import HomeVisits

CONFIG = web.AppKey("config", NodeConfig)
STORE = web.AppKey("store", Store)
SESSIONS = web.AppKey("sessions", Sessions)
CATALOG = web.AppKey("catalog", Catalog)
GPS = web.AppKey("gps", GpsTracker)
UPLINK = web.AppKey("uplink", Uplink)
DESK = web.AppKey("desk", ServiceDesk)
MODEM = web.AppKey("modem", ModemManager)
VISITS = web.AppKey("visits", HomeVisits)
ATTACHMENTS = web.AppKey("attachments", Attachments)
PREREG = web.AppKey("prereg", Preregistrations)
TRIPS = web.AppKey("trips", Trips)
GPS_TIMES = web.AppKey("gps_times", GpsTimes)
