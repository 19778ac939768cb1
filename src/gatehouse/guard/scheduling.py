"""The gateway as a batch task to Linux's scheduler, so that it does not preempt its upstream.

A gateway often shares a core with the MCP server behind it. Every request then wakes the
gateway twice (the client's request, then the upstream's answer), and by default a woken task
preempts the one running: the upstream is interrupted in the middle of its call, both processes'
working sets take turns in the core's caches, and each switch happens once a request. Under
``SCHED_BATCH`` (sched(7)) the kernel does not preempt the running task on the gateway's
wakeups; the gateway runs when the upstream waits or its time slice ends, and then forwards
every request and answer that arrived meanwhile in one turn. The gateway's share of the CPU is
unchanged (the same weight as any task of its nice value); a gateway alone on an idle core
runs as soon as it is woken, as before.

Measured with bench/guard.py in one run (2026-11-28, ``--only sdk,gateway,gateway-preempting
--rounds 2 --duration 30``: the gateway beside the benchmark's SDK server on one core, 16
clients, 120 windows a row): under SCHED_BATCH the gateway took 111 us of CPU a call, and kept
0.917 of the bare server's throughput, adding +1.92 ms at p50 (95% interval +1.45 to +2.40);
under the default policy 162 us, 0.826, and +4.52 ms (+3.97 to +5.07).
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("gatehouse.gateway")


def run_as_batch_task() -> bool:
    """Put the calling thread, and the threads it starts later, under ``SCHED_BATCH``
    (sched_setscheduler(2)); False, after a warning, where the system has no such policy or refuses it."""
    policy = getattr(os, "SCHED_BATCH", None)
    if policy is None:
        log.warning("this system has no SCHED_BATCH scheduling policy: the gateway runs under the default one")
        return False
    try:
        os.sched_setscheduler(0, policy, os.sched_param(0))
    except OSError as exc:
        log.warning("the gateway could not switch to the SCHED_BATCH scheduling policy (%s): it runs under the default one",
                    exc.strerror or exc)
        return False
    return True
