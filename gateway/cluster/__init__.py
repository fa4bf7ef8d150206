"""Many instances as one gateway: signed session ids, the peer registry, forwarding."""
