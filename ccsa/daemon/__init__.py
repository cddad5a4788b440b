"""The daemon (``cc-slurm-adapter -daemon``): state, sync planning, delivery, PrEp, supervisor.

Module map: ``store`` (SQLite state), ``plan`` (pure decisions), ``sync`` (one cluster's Slurm
I/O), ``delivery`` (outbox workers), ``prep`` (hook socket + coalescer), ``stats`` (counters),
``supervisor`` (the root nursery; ``run``/``main``). See docs/daemon.md.
"""
