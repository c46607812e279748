"""What runs on the board: standard library + torch only.

Nothing here imports ``farm.*`` outside ``farm.engine``: the package ships to
boards as a zip of ``farm/__init__.py`` and ``farm/engine/*.py``. Importing the
package is cheap (no torch); the modules that need torch import it themselves.

    request.py   the task request, validated
    runner.py    one task start to finish (+ the warm model cache)
    timing.py    the bare timed loop
    layers.py    the hooked per-layer pass and hook-cost calibration
    memory.py    parameter bytes, live-activation peak, MemAvailable, VmHWM
    markers.py   code-annotation markers as column arrays
    pulse.py     the busy/idle sync pulse
    stats.py     latency statistics (pure stdlib)
    host.py      threads, CPU affinity, facts about the board
    serve.py     the warm engine's JSON-lines loop
    lease.py     the board lease: one flock per board, held for a task
    __main__.py  ``python -m farm.engine run|serve``
"""
