"""`mobile-office`: one command, subcommands demo, node, hq, provision, sim, config-docs."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

from kit import settings

from . import __version__
from .runtime import setup_logging

log = logging.getLogger("mobile_office")


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="run broker, HQ and one simulated van on this machine",
                       description="Runs the whole system on one machine: an MQTT broker (its own Mosquitto, MQTT 5, unless --broker; "
                       "the embedded amqtt broker only where Mosquitto is not installed), "
                       "HQ, and one van node whose GPS simulator drives a trip from stops.json. Stops on Ctrl-C.")
    p.add_argument("--data-dir", type=Path, default=Path("./demo-data"), help="where the demo keeps HQ, the van and their keys (default: ./demo-data)")
    p.add_argument("--http-port", type=settings.port, default=8080, help="van UI port (default: 8080)")
    p.add_argument("--hq-port", type=settings.port, default=8090, help="HQ dashboard port (default: 8090)")
    p.add_argument("--admin-password", help="password of the demo administrator 'admin' (default: random, printed)")
    p.add_argument("--broker", type=settings.mqtt_url, help="use this MQTT 5 broker (e.g. mqtt://127.0.0.1:1883 for Mosquitto) instead of starting one")
    p.add_argument("--embedded-broker", action="store_true",
                   help="use the embedded amqtt broker (MQTT 3.1.1; needs the 'embedded-broker' extra) even if Mosquitto is installed")
    p.add_argument("--gpsd", type=settings.host_port, help="use this gpsd (HOST:PORT) instead of the GPS simulator")
    p.add_argument("--modem", help="serial device of a satellite modem (a real RockBLOCK/9603 or another emulator) instead of the simulated one")
    p.add_argument("--directip-port", type=settings.port, help="port of HQ's Iridium DirectIP receiver (default: a free port, printed)")
    p.add_argument("--trip", default="TRIP-NORTH", help="simulated trip from stops.json (default: TRIP-NORTH)")
    p.add_argument("--speedup", type=settings.positive_float, default=4.0,
                   help="the van drives this many times faster than real (default: 4; the receiver stamps real time, so above "
                   "about x4.5 the van would exceed 200 km/h and the track filter rightly drops its points)")
    p.add_argument("--dwell-min", type=settings.positive_float, default=40.0,
                   help="simulated minutes the van stays at each stop (default: 40, so a demo day takes about half an hour "
                   "and each stop lasts 10 real minutes, long enough for stop detection's 5-minute dwell)")
    p.add_argument("--host", default="127.0.0.1", help="address both web UIs listen on (default: 127.0.0.1)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import DemoOptions, run_demo

    opts = DemoOptions(args.data_dir, args.http_port, args.hq_port, args.admin_password, args.broker, args.gpsd,
                       args.modem, args.directip_port, args.trip, args.speedup, args.host, args.dwell_min, args.embedded_broker)
    asyncio.run(run_demo(opts))
    return 0


def _add_node(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("node", help="run a van node from its enrolment bundle",
                       description="Runs the van node: local web UI, encrypted store, GPS, sync with HQ.")
    p.add_argument("--bundle", type=Path, required=True, help="enrolment bundle directory made by 'provision add-node'")
    settings.NODE.add_arguments(p)
    p.set_defaults(func=cmd_node)


def cmd_node(args: argparse.Namespace) -> int:
    import signal

    from edge.app import create_app
    from kit.tasks import LOOPS

    from . import ignition, sdnotify
    from .nodecli import node_config, power_settings
    from .runtime import start_site, stop_event

    cfg = node_config(args.bundle, args)
    power = power_settings(args.bundle, args)
    ignition_off = False

    async def main() -> None:
        nonlocal ignition_off
        stop, off = stop_event(), asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGPWR, off.set)  # UPS daemons: power is going
        app = create_app(cfg)
        runner = await start_site(app, cfg.http_host, cfg.http_port, ssl_context=cfg.https)
        log.info("node %s serving on %s://%s:%d/", cfg.node_id, "https" if cfg.https else "http", cfg.http_host, cfg.http_port)
        sdnotify.notify("READY=1")
        try:
            async with sdnotify.watchdog(app[LOOPS]), ignition.watch(power, off, app[LOOPS]):  # shown in /api/v1/status
                waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(off.wait())]
                try:
                    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waiters:
                        w.cancel()
                    await asyncio.gather(*waiters, return_exceptions=True)
                ignition_off = off.is_set()
                sdnotify.notify("STOPPING=1")
                if ignition_off:
                    await ignition.final_sync(app, power.shutdown_sync_seconds)
        finally:
            await runner.cleanup()

    asyncio.run(main())
    if ignition_off:
        ignition.checkpoint(cfg.db_path)
        ignition.power_off(power.poweroff_command)
    return 0


def _add_hq(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("hq", help="run HQ: ingest from the fleet and the dashboard")
    settings.HQ.add_arguments(p)
    p.set_defaults(func=cmd_hq)


def cmd_hq(args: argparse.Namespace) -> int:
    from hq.app import create_app

    from .nodecli import hq_config, hq_listen_check
    from .runtime import start_site, stop_event

    cfg = hq_config(args)
    hq_listen_check(cfg)
    if cfg.keys.passphrase is None:
        log.warning("HQ's private keys are NOT encrypted on disk (%s): anyone who copies that directory can open every record; "
                    "encrypt them with a passphrase (docs/security.md, 'Key custody')", cfg.keys.directory)

    async def main() -> None:
        stop = stop_event()
        runner = await start_site(create_app(cfg), cfg.host, cfg.port, ssl_context=cfg.https)
        log.info("HQ worker %s serving on %s://%s:%d/%s", cfg.worker, "https" if cfg.https else "http", cfg.host, cfg.port,
                 f" (behind the TLS proxy at {', '.join(sorted(cfg.trusted_proxies))})" if cfg.trusted_proxies else "")
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())
    return 0


def _add_hq_user(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("hq-user", help="add or update a user of the HQ dashboard")
    p.add_argument("name", help="username, e.g. olena.k")
    p.add_argument("--role", required=True, choices=("viewer", "dispatcher", "records_officer", "admin", "back_office"),
                   help="viewer sees the fleet; dispatcher also sends commands; records_officer opens and exports records; admin all;"
                        " back_office only exports (the back office's importer)")
    p.add_argument("--hq-data-dir", type=Path, required=True, help="HQ's data directory")
    p.add_argument("--password", help="the password (default: a random one, printed once)")
    p.add_argument("--db", type=settings.db_url, help="HQ's PostgreSQL database, as given to `mobile-office hq --db` (default: SQLite in --hq-data-dir)")
    p.set_defaults(func=cmd_hq_user)


def cmd_hq_user(args: argparse.Namespace) -> int:
    from hq import users
    from hq.store import HQStore
    from provisioning.keys import one_time_password
    from sync.clock import SystemClock

    password = args.password or one_time_password() + one_time_password()[:4]

    async def main() -> None:
        store = await HQStore.open(args.db or args.hq_data_dir / "hq.db", SystemClock())
        try:
            await users.create_schema(store.db)
            await users.add_user(store.db, args.name, args.role, password, store.clock.now())
        finally:
            await store.close()

    try:
        asyncio.run(main())
    except users.UserError as exc:
        raise settings.ConfigError(str(exc)) from exc
    print(f"HQ user {args.name} ({args.role})" + ("" if args.password else f": password {password}"))
    return 0


def _add_hq_retention(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("hq-retention", help="HQ's retention report: the closed cases whose personal data was shredded (--run: shred now)")
    p.add_argument("--hq-data-dir", type=Path, required=True, help="HQ's data directory")
    p.add_argument("--db", type=settings.db_url, help="HQ's PostgreSQL database, as given to `mobile-office hq --db` (default: SQLite in --hq-data-dir)")
    p.add_argument("--run", action="store_true", help="run a retention round first (HQ's loop does it every --hq-retention-interval)")
    p.add_argument("--hq-retention-days", type=settings.positive_float, default=settings.HQ.defaults()["hq_retention_days"],
                   help="days personal data is kept after a case is closed (as given to `mobile-office hq`)")
    p.add_argument("--limit", type=settings.positive_int, default=1000, help="most entries to print (newest first)")
    p.set_defaults(func=cmd_hq_retention)


def cmd_hq_retention(args: argparse.Namespace) -> int:
    from hq import retention
    from hq.store import HQStore
    from sync.clock import SystemClock

    async def main() -> dict[str, Any]:
        store = await HQStore.open(args.db or args.hq_data_dir / "hq.db", SystemClock())
        try:
            await retention.create_schema(store)
            removed = await retention.run_round(store, args.hq_retention_days) if args.run else []
            return {"retention_days": args.hq_retention_days, "removed_now": len(removed), **await retention.report(store, args.limit)}
        finally:
            await store.close()

    print(json.dumps(asyncio.run(main()), ensure_ascii=False, indent=1))
    return 0


def _add_hq_token(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("hq-token", help="a machine token for HQ's JSON API (printed once; HQ keeps only its hash), or revoke one",
                       description="Prints a token for 'Authorization: Bearer TOKEN' on HQ's /api/v1/ routes, acting with ROLE. "
                       "Issuing a name again replaces its token; --revoke ends it at once.")
    p.add_argument("name", help="what the token is for, e.g. reporting or monitoring")
    p.add_argument("--role", choices=("viewer", "dispatcher", "records_officer", "admin", "back_office"), default=None,
                   help="what the token may do, as for users (back_office: the back office's importer, exports records only;"
                        " required unless --revoke)")
    p.add_argument("--hq-data-dir", type=Path, required=True, help="HQ's data directory")
    p.add_argument("--db", type=settings.db_url, help="HQ's PostgreSQL database, as given to `mobile-office hq --db` (default: SQLite in --hq-data-dir)")
    p.add_argument("--revoke", action="store_true", help="revoke the token of this name instead")
    p.set_defaults(func=cmd_hq_token)


def cmd_hq_token(args: argparse.Namespace) -> int:
    from hq import tokens
    from hq.store import HQStore
    from sync.clock import SystemClock

    if not args.revoke and args.role is None:
        raise settings.ConfigError("--role is required to issue a token")

    async def main() -> str | None:
        store = await HQStore.open(args.db or args.hq_data_dir / "hq.db", SystemClock())
        try:
            await tokens.create_schema(store.db)
            if args.revoke:
                await tokens.revoke(store.db, args.name, store.clock.now())
                return None
            return await tokens.issue(store.db, args.name, args.role, store.clock.now())
        finally:
            await store.close()

    try:
        token = asyncio.run(main())
    except tokens.TokenError as exc:
        raise settings.ConfigError(str(exc)) from exc
    if token is None:
        print(f"HQ token {args.name} revoked")
    else:
        print(token)  # alone on stdout, for scripts; the note goes to stderr
        print(f"HQ token {args.name} ({args.role}): shown once, HQ keeps only its hash. Send it as 'Authorization: Bearer TOKEN'.",
              file=sys.stderr)
    return 0


def _passphrase_arg(q: argparse.ArgumentParser) -> None:
    q.add_argument("--passphrase-file", type=Path, metavar="FILE",
                   help="file whose first line is the passphrase of HQ's private keys (default: $MO_HQ_PASSPHRASE; none: keys unencrypted)")


def _passphrase(args: argparse.Namespace) -> bytes | None:
    from provisioning.keys import read_passphrase

    return read_passphrase(args.passphrase_file)


def _add_provision(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("provision", help="HQ keys and node enrolment bundles")
    psub = p.add_subparsers(dest="provision_cmd", required=True, metavar="COMMAND")
    q = psub.add_parser("init-hq", help="create HQ's keys in a directory")
    q.add_argument("--hq-dir", type=Path, required=True, help="HQ key directory (created)")
    _passphrase_arg(q)
    q.add_argument("--no-passphrase", action="store_true",
                   help="leave HQ's private keys unencrypted on disk (not recommended: whoever copies the directory opens every record)")
    q.set_defaults(func=cmd_init_hq)
    q = psub.add_parser("rotate-hq-seal", help="a new sealing key for HQ: new records use it, older ones stay readable")
    q.add_argument("--hq-dir", type=Path, required=True, help="HQ key directory")
    _passphrase_arg(q)
    q.set_defaults(func=cmd_rotate_hq_seal)
    q = psub.add_parser("add-node", help="enrol a van: write its bundle and register it at HQ")
    q.add_argument("name", help="node id, e.g. van-01")
    q.add_argument("--hq-dir", type=Path, required=True, help="HQ key directory")
    q.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    q.add_argument("--admin", action="append", default=[], metavar="USER[:ROLE]",
                   help="administrator account (repeatable; role van_admin, case_admin or supervisor); a one-time password is printed")
    q.add_argument("--ui-name", action="append", default=[], metavar="HOST",
                   help="host name or IP address tablets use for the van UI over HTTPS (repeatable; default: NAME.local, 10.42.0.1, "
                   "localhost, 127.0.0.1)")
    _passphrase_arg(q)
    q.set_defaults(func=cmd_add_node)
    q = psub.add_parser("add-hq-worker", help="a client certificate for an HQ ingest worker (CN hq-...)")
    q.add_argument("name", help="worker name, e.g. hq-1 (also its MQTT client id)")
    q.add_argument("--hq-dir", type=Path, required=True, help="HQ key directory")
    _passphrase_arg(q)
    q.set_defaults(func=cmd_add_hq_worker)
    q = psub.add_parser("hq-cert", help="HQ's HTTPS certificate from HQ's CA, for its host names and addresses")
    q.add_argument("--hq-dir", type=Path, required=True, help="HQ key directory (the certificate goes to HQ_DIR/https, where 'hq' finds it)")
    q.add_argument("--name", action="append", default=[], metavar="HOST",
                   help="DNS name or IP address clients use for HQ (repeatable; default: localhost and 127.0.0.1)")
    _passphrase_arg(q)
    q.set_defaults(func=cmd_hq_cert)
    q = psub.add_parser("broker-config", help="write a Mosquitto configuration: mTLS, per-van ACL, CRL")
    q.add_argument("--hq-dir", type=Path, required=True, help="HQ key directory")
    q.add_argument("--out", type=Path, required=True, help="directory to write (run: mosquitto -c OUT/mosquitto.conf)")
    q.add_argument("--port", type=settings.port, default=8883, help="TLS listener port (default 8883)")
    q.add_argument("--host", default="0.0.0.0", help="listener address (default 0.0.0.0)")
    q.add_argument("--name", action="append", default=[], metavar="HOST",
                   help="broker host name or IP for its certificate (repeatable; default: localhost and 127.0.0.1)")
    q.add_argument("--run-as", default="mosquitto", help="system user the broker drops to when started as root (default mosquitto)")
    settings.BROKER.add_arguments(q)
    _passphrase_arg(q)
    q.set_defaults(func=cmd_broker_config)
    q = psub.add_parser("revoke", help="cut a lost van off: HQ refuses its signature, the broker its certificate (CRL, reloaded)")
    q.add_argument("name", help="node id")
    q.add_argument("--hq-dir", type=Path, required=True, help="HQ key directory")
    settings.BROKER.add_arguments(q, only=("crl_days",))
    _passphrase_arg(q)
    q.set_defaults(func=cmd_revoke)
    q = psub.add_parser("refresh-crl", help="re-sign the CRL, copy it to every broker broker-config wrote and reload them "
                        "(daily: deploy/mobile-office-crl.timer)")
    q.add_argument("--hq-dir", type=Path, required=True, help="HQ key directory")
    settings.BROKER.add_arguments(q, only=("crl_days",))
    _passphrase_arg(q)
    q.set_defaults(func=cmd_refresh_crl)
    q = psub.add_parser("rotate", help="new signing key and certificates for a van, delivered sealed by HQ's rotate_key command")
    q.add_argument("name", help="node id")
    q.add_argument("--hq-dir", type=Path, required=True, help="HQ key directory")
    q.add_argument("--out", type=Path, required=True, help="directory for the new credentials (a full bundle with --bundle)")
    q.add_argument("--bundle", type=Path, help="the van's current bundle: node.json and keyslots.json are copied, making a full bundle")
    q.add_argument("--ui-name", action="append", default=[], metavar="HOST", help="names for the new UI certificate (default as add-node)")
    _passphrase_arg(q)
    q.set_defaults(func=cmd_rotate)
    q = psub.add_parser("list", help="enrolled vans and whether they are revoked")
    q.add_argument("--hq-dir", type=Path, required=True, help="HQ key directory")
    _passphrase_arg(q)
    q.set_defaults(func=cmd_list_nodes)


def cmd_init_hq(args: argparse.Namespace) -> int:
    from provisioning.keys import init_hq

    passphrase = _passphrase(args)
    if passphrase is None and not args.no_passphrase:
        raise settings.ConfigError("HQ's private keys are encrypted with a passphrase: give --passphrase-file FILE or set MO_HQ_PASSPHRASE "
                                   "(or, knowingly, --no-passphrase)")
    if passphrase is None:
        log.warning("HQ's private keys will be stored UNENCRYPTED in %s (--no-passphrase): anyone who copies that directory "
                    "can open every record ever collected", args.hq_dir)
    init_hq(args.hq_dir, passphrase)
    print(f"HQ keys created in {args.hq_dir}" + (" (private keys encrypted with the passphrase)" if passphrase else ""))
    return 0


def cmd_rotate_hq_seal(args: argparse.Namespace) -> int:
    from provisioning.keys import load_hq, rotate_hq_seal

    kid, _ = rotate_hq_seal(load_hq(args.hq_dir, _passphrase(args)))
    print(f"HQ's new sealing key {kid} is current; the older keys stay in {args.hq_dir} to open older records. Restart HQ, then send "
          "each van the 'hq_seal_key' command from the dashboard: from then on it seals new records to the new key.")
    return 0


def cmd_add_node(args: argparse.Namespace) -> int:
    from provisioning.keys import AdminAccount, add_node, default_ui_names, load_hq, one_time_password

    accounts = []
    for spec in args.admin or ["admin"]:
        user, _, role = spec.partition(":")
        accounts.append(AdminAccount(user, one_time_password(), role or "van_admin", must_change=True))
    ui_names = args.ui_name or default_ui_names(args.name)
    add_node(load_hq(args.hq_dir, _passphrase(args)), args.name, args.out, accounts, ui_names=ui_names)
    print(f"Bundle for {args.name} written to {args.out} (van UI over HTTPS for {', '.join(ui_names)})")
    for a in accounts:
        print(f"  {a.username} ({a.role}): one-time password {a.password} (to be changed at the first login)")
    return 0


def cmd_add_hq_worker(args: argparse.Namespace) -> int:
    from provisioning.ca import CA

    if not args.name.startswith("hq-"):
        raise settings.ConfigError("an HQ worker's name starts with 'hq-' (vans can never take such a name)")
    ca = CA.load(args.hq_dir / "ca", _passphrase(args))
    out = args.hq_dir / "workers" / args.name
    ca.issue(args.name, out, "worker")
    (out / "ca.crt").write_bytes(ca.cert_path.read_bytes())
    print(f"HQ worker {args.name}: certificate in {out} (mobile-office hq --hq-worker {args.name} --hq-broker mqtts://...)")
    return 0


def cmd_hq_cert(args: argparse.Namespace) -> int:
    from provisioning.ca import CA
    from provisioning.tls import HQ_CERT_DIR

    names = args.name or ["localhost", "127.0.0.1"]
    ca = CA.load(args.hq_dir / "ca", _passphrase(args))
    key, cert = ca.issue(names[0], args.hq_dir / HQ_CERT_DIR, "hq", server_names=names)
    print(f"HQ's HTTPS certificate for {', '.join(names)}: {cert} (key {key}); 'mobile-office hq --hq-data-dir {args.hq_dir}' serves "
          f"HTTPS with it. Clients trust {ca.cert_path}.")
    return 0


def cmd_broker_config(args: argparse.Namespace) -> int:
    from provisioning.ca import CA, broker_config

    workers = sorted(p.name for p in (args.hq_dir / "workers").glob("hq-*")) if (args.hq_dir / "workers").exists() else []
    if not workers:
        raise settings.ConfigError("no HQ worker yet: run 'mobile-office provision add-hq-worker hq-1 --hq-dir ...' first")
    values = settings.BROKER.resolve(args)
    conf = broker_config(CA.load(args.hq_dir / "ca", _passphrase(args)), args.out.resolve(), args.port, args.host, args.name or ["localhost", "127.0.0.1"], workers,
                         args.run_as, values["broker_max_packet"], values["crl_days"], values["broker_reload_command"])
    print(f"Broker configuration written: mosquitto -c {conf}")
    return 0


def _publish_crl(args: argparse.Namespace) -> list[str]:
    """The CRL to every recorded broker, each reloaded; one line per broker."""
    from provisioning.ca import CA
    from provisioning.errors import ProvisioningError

    try:
        return CA.load(args.hq_dir / "ca", _passphrase(args)).publish_crl(settings.BROKER.resolve(args)["crl_days"])
    except ProvisioningError as exc:
        raise settings.ConfigError(str(exc)) from exc


def cmd_revoke(args: argparse.Namespace) -> int:
    from provisioning.keys import load_hq, revoke_node

    n = revoke_node(load_hq(args.hq_dir, _passphrase(args)), args.name)
    print(f"{args.name} revoked ({n} certificate(s) on the CRL); HQ refuses the van's messages from now on.")
    for line in _publish_crl(args):
        print(f"  broker {line}")
    return 0


def cmd_refresh_crl(args: argparse.Namespace) -> int:
    lines = _publish_crl(args)
    print(f"CRL re-signed ({settings.BROKER.resolve(args)['crl_days']} days)" + ("" if lines else "; no broker recorded (broker-config)"))
    for line in lines:
        print(f"  broker {line}")
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    from provisioning.keys import default_ui_names, load_hq
    from provisioning.rotation import rotate_node

    r = rotate_node(load_hq(args.hq_dir, _passphrase(args)), args.name, args.out, args.ui_name or default_ui_names(args.name), args.bundle)
    print(f"{args.name}: new credentials in {args.out} (rotation {r.rotation_id}). Send the van the 'rotate_key' command from the HQ"
          f" dashboard; HQ accepts both keys until the van signs with the new one, then only the new one.")
    return 0


def cmd_list_nodes(args: argparse.Namespace) -> int:
    from provisioning.keys import list_nodes, load_hq

    for n in list_nodes(load_hq(args.hq_dir, _passphrase(args))):
        print(f"{n['node_id']:<20} {'REVOKED' if n.get('revoked') else 'active'}")
    return 0


def _add_sim(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("sim", help="run a hardware simulator alone")
    psub = p.add_subparsers(dest="sim_cmd", required=True, metavar="DEVICE")
    q = psub.add_parser("gps", help="a GPS receiver driving a trip, served as a gpsd-protocol server")
    q.add_argument("--trip", default="TRIP-NORTH", help="trip code from stops.json")
    q.add_argument("--speedup", type=settings.positive_float, default=30.0, help="simulated time factor")
    q.add_argument("--port", type=settings.port, default=2947, help="TCP port of the gpsd-protocol server (default 2947)")
    q.add_argument("--pty", action="store_true", help="write NMEA 0183 to a pseudo-terminal instead (point gpsd or minicom at the printed device)")
    q.add_argument("--tunnel", action="append", default=[], metavar="FROM-TO", help="no fix between these simulated seconds (repeatable)")
    q.add_argument("--cold-start", type=float, default=0.0, help="simulated seconds without a fix after power-on")
    q.set_defaults(func=cmd_sim_gps)
    q = psub.add_parser("modem", help="an Iridium 9603 SBD modem on a pseudo-terminal, with its satellite gateway")
    q.add_argument("--imei", default="300434063839690", help="the modem's IMEI (15 digits)")
    q.add_argument("--directip", type=settings.host_port, default=("127.0.0.1", 10800), help="HQ's DirectIP MO receiver (default 127.0.0.1:10800)")
    q.add_argument("--mt-port", type=settings.port, default=10801, help="port where the gateway accepts DirectIP MT from HQ (default 10801)")
    q.add_argument("--signal", type=int, default=4, choices=range(0, 6), help="signal bars 0..5 (default 4)")
    q.add_argument("--failure-rate", type=float, default=0.0, help="share of SBD sessions that fail (0..1)")
    q.add_argument("--noise-rate", type=float, default=0.0, help="share of answers preceded by line noise (0..1)")
    q.add_argument("--no-csq", action="store_true", help="answer ERROR to AT+CSQ and AT+CIER, as some 960x firmwares and third-party emulators do")
    q.add_argument("--answer-style", default="standard", choices=("standard", "compact", "spaced"),
                   help="spacing of +SBDIX/+CSQ/+CIEV answers (standard: as the 9603)")
    q.set_defaults(func=cmd_sim_modem)
    q = psub.add_parser("sms", help="a local SMS gateway (HTTP, the provider adapter's API) that records what it was sent")
    q.add_argument("--port", type=settings.port, default=8095, help="TCP port (default 8095)")
    q.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    q.add_argument("--out", type=Path, default=Path("sms-sent.jsonl"), help="JSON-lines file of accepted messages (default sms-sent.jsonl)")
    q.add_argument("--token", help="bearer token HQ must present (default: none)")
    q.add_argument("--fail", type=int, default=0, help="answer the first N requests with 503")
    q.add_argument("--delay", type=float, default=0.0, help="seconds to wait after recording a message before answering")
    q.set_defaults(func=cmd_sim_sms)


def cmd_sim_gps(args: argparse.Namespace) -> int:
    import time

    from firmware_sim.gpsd_server import GpsdProtocolServer
    from firmware_sim.route import Route

    from .runtime import stop_event

    from firmware_sim.gps_pty import NmeaPty

    route = Route.from_trip(args.trip)
    t0 = time.monotonic()
    tunnels = []
    for spec in args.tunnel:
        a, _, b = spec.partition("-")
        try:
            tunnels.append((float(a), float(b)))
        except ValueError as exc:
            raise settings.ConfigError(f"--tunnel: expected FROM-TO in simulated seconds, got {spec!r}") from exc

    async def main() -> None:
        stop = stop_event()
        if args.pty:
            async with NmeaPty(route, speedup=args.speedup, tunnels=tunnels, cold_start=args.cold_start) as feed:
                print(f"NMEA receiver on {feed.device} (trip {args.trip}, x{args.speedup:g}); e.g. gpsd -N -n -b {feed.device}", flush=True)
                await stop.wait()
            return
        async with GpsdProtocolServer(lambda: route.at((time.monotonic() - t0) * args.speedup), port=args.port) as srv:
            print(f"gpsd-protocol server on 127.0.0.1:{srv.port} (trip {args.trip}, x{args.speedup:g})", flush=True)
            await stop.wait()

    asyncio.run(main())
    return 0


def cmd_sim_modem(args: argparse.Namespace) -> int:
    from firmware_sim.gateway import SatelliteGateway
    from firmware_sim.modem import ModemSim, ModemSimConfig

    from .runtime import stop_event

    if not (len(args.imei) == 15 and args.imei.isdigit()):
        raise settings.ConfigError("--imei: 15 digits")
    cfg = ModemSimConfig(imei=args.imei, failure_rate=args.failure_rate, noise_rate=args.noise_rate, signal=lambda: args.signal,
                         csq_supported=not args.no_csq, answer_style=args.answer_style)

    async def main() -> None:
        stop = stop_event()
        async with SatelliteGateway(hq_host=args.directip[0], hq_port=args.directip[1], mt_port=args.mt_port) as gw:
            async with ModemSim(cfg, gw) as modem:
                gw.on_mt_queued.append(lambda imei: modem.ring())
                print(f"Iridium 9603 emulator on {modem.device} (IMEI {args.imei}); MO to DirectIP {args.directip[0]}:{args.directip[1]};"
                      f" MT accepted on port {gw.mt_port}", flush=True)
                await stop.wait()

    asyncio.run(main())
    return 0


def cmd_sim_sms(args: argparse.Namespace) -> int:
    from firmware_sim.sms_gateway import SmsGateway, serve

    from .runtime import stop_event

    async def main() -> None:
        await serve(SmsGateway(args.out, args.token, args.fail, args.delay), args.host, args.port, stop_event())

    asyncio.run(main())
    return 0


def _add_report(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("report", help="the department's numbers for a period (trips, km, stops, citizens, services, ratings)")
    p.add_argument("--data-dir", type=Path, required=True,
                   help="a van node's data directory (the one holding node.db), HQ's (holding hq.db), or the demo's (holding node/ and hq/)")
    p.add_argument("--side", choices=("van", "hq"),
                   help="which one to report when the directory holds both a van and HQ (default: the van, and it says so)")
    p.add_argument("--from", dest="date_from", required=True, help="first day, YYYY-MM-DD")
    p.add_argument("--to", dest="date_to", required=True, help="last day, YYYY-MM-DD")
    p.add_argument("--format", choices=("json", "csv", "md"), default="md", help="output format (default md)")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from datetime import date

    from .report import build, build_hq, render

    try:
        start, end = date.fromisoformat(args.date_from), date.fromisoformat(args.date_to)
    except ValueError as exc:
        raise settings.ConfigError(f"--from/--to: dates as YYYY-MM-DD ({exc})") from exc
    if end < start:
        raise settings.ConfigError("--to is before --from")
    side, data_dir = report_source(args.data_dir, args.side)
    print(render(build_hq(data_dir, start, end) if side == "hq" else build(data_dir, start, end), args.format), end="")
    return 0


REPORT_DBS = {"van": ("node.db", "node"), "hq": ("hq.db", "hq")}


def report_source(data_dir: Path, side: str | None) -> tuple[str, Path]:
    """The side to report and the directory holding its database: DIR itself, or DIR/node and DIR/hq (the demo's layout)."""
    found: dict[str, Path] = {}
    for name, (db, sub) in REPORT_DBS.items():
        for d in (data_dir, data_dir / sub):
            if (d / db).exists():
                found[name] = d
                break
    if side is not None:
        if side not in found:
            db, sub = REPORT_DBS[side]
            raise settings.ConfigError(f"--side {side}: no {db} in {data_dir} or {data_dir / sub}")
        return side, found[side]
    if not found:
        raise settings.ConfigError(f"--data-dir: no node.db or hq.db in {data_dir} (nor in its node/ or hq/)")
    side = "van" if "van" in found else "hq"  # the van first, as a directory holding both always did
    if len(found) == 2:
        print(f"mobile-office report: {data_dir} holds a van ({found['van']}) and HQ ({found['hq']}); "
              f"reporting the van's figures (--side hq for HQ's)", file=sys.stderr)
    return side, found[side]


def _add_config_docs(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("config-docs", help="print the settings reference (Markdown)")
    p.set_defaults(func=lambda a: print(settings.docs_markdown()) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mobile-office", description="Mobile Office (ЦНАП): van node, HQ, provisioning and simulators.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_demo, _add_node, _add_hq, _add_hq_user, _add_hq_token, _add_hq_retention, _add_provision, _add_sim, _add_report,
                _add_config_docs):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    from provisioning.errors import ProvisioningError

    try:
        return int(args.func(args) or 0)
    except (settings.ConfigError, ProvisioningError) as exc:
        print(f"mobile-office: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
