"""``python -m farm.engine run|serve`` — and ``python3 engine.zip run|serve``.

stdout is the protocol channel and nothing else. Before any work, file
descriptor 1 is moved aside for the protocol and fd 1 is pointed at stderr, so
a stray ``print`` in a user's model, or a C library writing to stdout, lands in
the log instead of corrupting a JSON line.

Inherited thread-count variables (Ray sets ``OMP_NUM_THREADS=1`` for its workers)
are removed before torch is imported: the request alone decides the threads.

Exit codes: 0 when a result was written (even ``does_not_fit`` or ``error``),
2 when the request itself could not be read.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import IO, NoReturn


def _protocol_stdout() -> IO[str]:
    """A private handle on the real stdout; fd 1 and ``sys.stdout`` become stderr."""
    sys.stdout.flush()
    proto = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return proto


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="farm.engine", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="one request (JSON) on stdin, one result line on stdout")
    run.add_argument("--request", help="read the request from this file instead of stdin")
    serve = sub.add_parser("serve", help="warm engine: JSON lines on stdin and stdout")
    serve.add_argument("--cache-size", type=int, default=2, help="models kept loaded (LRU)")
    lease = sub.add_parser("lease", help="take and release the board's lock on request")
    lease.add_argument("path", help="the lock file, in the board's cache directory")
    lease.add_argument("--ttl", type=float, default=60.0, help="seconds without renewal to let go")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logs on stderr")
    return p


def cli(argv: list[str] | None = None) -> int:
    """Run the engine command line; returns the exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s engine %(levelname)s %(message)s",
    )
    out = _protocol_stdout()
    if args.command == "lease":  # stdlib only: no torch import on this path
        from farm.engine.lease import serve

        return serve(args.path, args.ttl, out)
    # before torch is imported: its thread pools must not be sized by whoever started us
    from farm.engine.process import clean_environment

    clean_environment()
    # imported after the descriptors are set: torch's import must not reach stdout
    from farm.engine.request import RequestError, parse_request
    from farm.engine.runner import ModelCache, run_task
    from farm.engine.serve import Server

    if args.command == "serve":
        Server(ModelCache(capacity=args.cache_size)).serve(sys.stdin, out)
        return 0
    try:
        if args.request:
            with open(args.request, encoding="utf-8") as f:
                text = f.read()
        else:
            text = sys.stdin.read()
        request = parse_request(json.loads(text))
    except (OSError, ValueError, RequestError) as e:
        print(f"farm.engine: unreadable request: {e}", file=sys.stderr)
        return 2
    out.write(json.dumps(run_task(request)) + "\n")
    out.flush()
    return 0


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point for ``-m`` and the zip's ``__main__.py``: exits with the code."""
    raise SystemExit(cli(argv))


if __name__ == "__main__":
    main()
