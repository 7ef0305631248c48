"""trio-feed: gap-free, reconciled crypto-exchange market data, supervised with Trio."""
