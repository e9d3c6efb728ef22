"""Typed keys of the objects HQ's handlers share (web.AppKey)."""

from __future__ import annotations

from aiohttp import web

from kit.sessions import Session, Sessions
from sync.ingest import Ingest, MqttIngestWorker, SbdIngest

from .config import HQConfig
from .directip import DirectIpReceiver
from .sender import DownlinkSender
from .store import HQStore

CONFIG = web.AppKey("hq_config", HQConfig)
STORE = web.AppKey("hq_store", HQStore)
INGEST = web.AppKey("hq_ingest", Ingest)
WORKER = web.AppKey("hq_worker", MqttIngestWorker)
# Everything HQ sends down to the vans goes through this one (hq/sender.py).
DOWNLINK = web.AppKey("hq_downlink", DownlinkSender)
# The DirectIP MO receiver calls app[SBD_INGEST].on_mo(imei, momsn, payload, session_time).
SBD_INGEST = web.AppKey("hq_sbd_ingest", SbdIngest)
DIRECTIP = web.AppKey("hq_directip", DirectIpReceiver)
SESSIONS = web.AppKey("hq_sessions", Sessions)
# A request authenticated by a machine token (hq/tokens.py) carries its session-like identity here.
TOKEN_SESSION = web.RequestKey("hq_token_session", Session)
