"""The reports the gateway queues about mail: delivery status (G4) and read receipts (G2).

The messages themselves are built by :mod:`caducee.reports` (pure); this package decides when
one is due and queues it for the relay.
"""
