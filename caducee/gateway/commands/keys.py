"""``caducee keys rotate --home DIR``: a new key-encryption key, every data key rewrapped.

Rotation runs while the gateway serves: the new key becomes active first (new
blobs use it at once, in every process, since the keyring follows its
``active`` file), then existing data keys are rewrapped and sealed column values
(subjects, titles, names: J1) re-sealed in small transactions, then keys neither a
blob nor a sealed value refers to any more are retired. Blob files are never
rewritten.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from caducee.config import load_settings
from caducee.gateway.commands import Subcommands, add_home_argument
from caducee.gateway.runtime import build_gateway
from caducee.storage.db import Base
from caducee.storage.sealed_rotation import kek_ids_in_use, reseal_batch


def register(subcommands: Subcommands) -> None:
    parser = subcommands.add_parser("keys", help="manage encryption keys")
    actions = parser.add_subparsers(dest="keys_action", metavar="ACTION", required=True)
    rotate = actions.add_parser("rotate", help="rotate the key-encryption key")
    add_home_argument(rotate)
    rotate.set_defaults(handler=run_rotate)


def run_rotate(args: argparse.Namespace) -> int:
    gateway = build_gateway(load_settings(Path(args.home)))
    try:
        old_ids = gateway.keyring.key_ids()
        new_id = gateway.keyring.rotate()
        total = 0
        while True:
            with gateway.database.transaction() as session:
                count = gateway.blobs.rewrap_batch(session, new_id)
            total += count
            if count == 0:
                break
        resealed = 0
        while True:
            with gateway.database.transaction() as session:
                count = reseal_batch(session, Base.metadata)
            resealed += count
            if count == 0:
                break
        with gateway.database.transaction() as session:
            in_use = gateway.blobs.kek_ids_in_use(session)
            in_use |= kek_ids_in_use(session, Base.metadata, old_ids)
        retired = [key_id for key_id in old_ids if key_id != new_id and key_id not in in_use]
        for key_id in retired:
            gateway.keyring.retire(key_id)
    finally:
        gateway.close()
    print(f"New key-encryption key {new_id} is active.")
    print(
        f"Rewrapped {total} data key(s), re-sealed {resealed} value(s); "
        f"retired {len(retired)} old key(s)."
    )
    return 0
