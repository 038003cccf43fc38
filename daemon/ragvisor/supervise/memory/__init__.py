"""The memory guard: measure the box every few seconds and act before the kernel's OOM killer does.

On a 4 GB box the chat model loading beside the embedding model took the whole machine down.
Free RAM alone does not warn early enough, so the guard reads three signals: MemAvailable (what
can be had without swapping), the swap-in *rate* (a box paging back in is thrashing, however
much swap is left) and, where the kernel has it, pressure stall information (PSI: the share of
time tasks waited for memory). It also adds up the RSS of the programs of the stack (daemon,
worker, Ollama, Neo4j) against an optional budget.

Its rooms, from pure to I/O:

- `sample`: a :class:`MemorySample` and the :class:`MemoryProbe` seam;
- `probes`: :class:`SystemProbe` (psutil and ``/proc/pressure/memory``);
- `rehearsal`: :class:`FileProbe` (readings overridden from a JSON file, see
  :func:`probe_from_env`); the tests script theirs with :class:`ragvisor.testing.ScriptedProbe`;
- `levels`: :func:`assess` and :func:`next_level`, pure: a sample and the settings give a level;
  the level rises at once and falls only after a few calm checks clear the marks by a margin
  (hysteresis, so the guard does not flap around a threshold);
- `guard`: :class:`MemoryGuard` runs in the daemon's event loop (an APScheduler job): it samples
  in a thread, publishes metrics, logs level changes, unloads idle models under pressure
  (generator first, then embedder), tells `/ask` to answer extractively or to shed
  (:meth:`memory_short`, :meth:`ask_shed`) and checks that a model fits before it loads
  (:meth:`make_room`);
- `preload`: the check before the chat model loads, and the guard's hands (what it unloads).

Sizes in settings and logs are MB meaning MiB (1,048,576 bytes), as ``free -m`` shows them.
"""

from ragvisor.supervise.memory.guard import GuardActions, MemoryGuard, schedule_memory_guard
from ragvisor.supervise.memory.levels import (
    Assessment,
    LevelState,
    MemoryLevel,
    assess,
    capacity_settings,
    next_level,
)
from ragvisor.supervise.memory.probes import SystemProbe, parse_psi, read_psi
from ragvisor.supervise.memory.rehearsal import (
    OVERRIDE_KEYS,
    FileProbe,
    apply_overrides,
    probe_from_env,
    synthetic_sample,
)
from ragvisor.supervise.memory.sample import MB, TEST_MEMORY_FILE_ENV, MemoryProbe, MemorySample

__all__ = [
    "MB",
    "OVERRIDE_KEYS",
    "TEST_MEMORY_FILE_ENV",
    "Assessment",
    "FileProbe",
    "GuardActions",
    "LevelState",
    "MemoryGuard",
    "MemoryLevel",
    "MemoryProbe",
    "MemorySample",
    "SystemProbe",
    "apply_overrides",
    "assess",
    "capacity_settings",
    "next_level",
    "parse_psi",
    "probe_from_env",
    "read_psi",
    "schedule_memory_guard",
    "synthetic_sample",
]
