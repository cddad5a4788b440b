"""NATS side of ccsa: the line-protocol codec (``lineproto``) and the trio-facing ``publisher``."""
