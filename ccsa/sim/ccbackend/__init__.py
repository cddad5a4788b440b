"""Stand-in cc-backend v1.5.4: the job model (``state``), HTTP server, JWT auth and fault injection.

Run it with ``python -m ccsa.sim.ccbackend --help``; use it in-process through
``state.Backend`` (no sockets) or ``server.StandIn`` (real HTTP(S) on loopback).
"""
