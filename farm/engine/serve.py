"""The warm engine: JSON lines in, JSON lines out, one process for many tasks.

Each request line is ``{"id": n, "op": ..., ...}``; each answer is
``{"id": n, "ok": true, "result": {...}}`` or ``{"id": n, "ok": false,
"error": "..."}``. A line that cannot be understood gets ``ok: false`` and the
engine keeps serving; end of input ends it cleanly.

Ops: ``ping`` (versions, pid, CPUs, free memory and disk at ``path``),
``clock`` (``{"t_ns": monotonic_ns}`` for clock synchronisation), ``run``
(the request fields sit beside ``id`` and ``op``, or under ``request``),
``shutdown``.

A ``run`` whose measurement fails still answers ``ok: true``: the result's
``status`` says ``error`` or ``does_not_fit``, exactly as ``engine run`` would.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import IO, Any

from farm.engine import host, runtimes
from farm.engine.request import RequestError, parse_request
from farm.engine.runner import ModelCache, run_task

log = logging.getLogger("farm.engine")


class _Shutdown(Exception):
    pass


class Server:
    """Answers requests; owns the model cache that makes the engine warm."""

    def __init__(self, cache: ModelCache | None = None) -> None:
        self.cache = ModelCache() if cache is None else cache
        self.ops: dict[str, Callable[[dict], Any]] = {
            "ping": self._ping,
            "clock": lambda _msg: {"t_ns": time.monotonic_ns()},
            "prepare": self._prepare,
            "run": self._run,
            "shutdown": self._shutdown,
        }

    def handle_line(self, line: str) -> tuple[dict, bool]:
        """The answer to one request line, and whether to keep serving."""
        msg_id = None
        try:
            msg = json.loads(line)
            if not isinstance(msg, dict):
                raise RequestError("a request line must be a JSON object")
            msg_id = msg.get("id")
            op = self.ops.get(msg.get("op"))
            if op is None:
                raise RequestError(
                    f"unknown op {msg.get('op')!r}; expected one of {list(self.ops)}"
                )
            return {"id": msg_id, "ok": True, "result": op(msg)}, True
        except _Shutdown:
            return {"id": msg_id, "ok": True, "result": {}}, False
        except (ValueError, TypeError) as e:  # JSON and request errors
            return {"id": msg_id, "ok": False, "error": f"{type(e).__name__}: {e}"}, True
        except Exception as e:
            log.exception("request %r failed", msg_id)
            return {"id": msg_id, "ok": False, "error": f"{type(e).__name__}: {e}"}, True

    def serve(self, lines: IO[str], out: IO[str]) -> None:
        """Answer every line of ``lines`` on ``out`` until shutdown or end of input."""
        for line in lines:
            if not line.strip():
                continue
            answer, keep_going = self.handle_line(line)
            out.write(json.dumps(answer) + "\n")
            out.flush()
            if not keep_going:
                return

    def _ping(self, msg: dict) -> dict:
        path = msg.get("path")
        if path is not None and not isinstance(path, str):
            raise RequestError("ping path must be a string")
        info = host.ping(path)
        info["cached_models"] = len(self.cache)
        return info

    def _prepare(self, msg: dict) -> dict:
        """Import a runtime's library before the first task's clock starts (torch takes
        minutes on a slow board: the start-up limit's, not the task's): ``missing`` is
        why this board cannot run it, or None."""
        name = msg.get("runtime")
        if not isinstance(name, str):
            raise RequestError("prepare runtime must be a string")
        try:
            runtime = runtimes.get(name)
        except KeyError as exc:
            raise RequestError(str(exc.args[0])) from None
        return {"missing": runtime.available()}

    def _run(self, msg: dict) -> dict:
        fields = msg.get("request")
        if fields is None:
            fields = {k: v for k, v in msg.items() if k not in ("id", "op")}
        return run_task(parse_request(fields), self.cache)

    def _shutdown(self, _msg: dict) -> dict:
        raise _Shutdown
