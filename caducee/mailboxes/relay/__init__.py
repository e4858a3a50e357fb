"""Mail leaving the gateway: the outbound queue and the relay's durable per-recipient state."""
