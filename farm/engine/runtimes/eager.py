"""PyTorch eager: the model as written (the zoo's graphs, users' modules and programs).

The artifact kinds ``graph``, ``module`` and ``program`` (`farm.engine.artifact`).
Threads are torch's intra-op pool (`farm.engine.host.apply_threads`). Its layer
pass and memory probe are torch instruments (ticks in a zoo graph's loop, an
exported graph's nodes, hooks; live-activation tracking), so the runner drives
them itself for this runtime (`farm.engine.runner`); a `Session` here is the same
model for code that only needs load and one call (benchmarks, agreement checks).
"""

from __future__ import annotations

from typing import Any

from farm.engine.runtimes.base import Runtime, Session, register


@register("eager")
class Eager(Runtime):
    kinds = ("graph", "module", "program")
    needs_torch = True
    library = "torch"

    def set_threads(self, threads: int) -> int:
        from farm.engine import host

        return host.apply_threads(threads)

    def load(self, path: str, manifest: dict[str, Any]) -> EagerSession:
        from farm.engine import artifact

        return EagerSession(artifact.load(path))


class EagerSession(Session):
    form = "eager"
    impl = "torch"

    def __init__(self, model: Any) -> None:
        import torch

        from farm.engine import memory
        from farm.engine.timing import forward_fn

        self.model = model
        self.example = model.example_input("cpu")
        args = self.example if isinstance(self.example, tuple) else (self.example,)
        self.inputs = [t.numpy() for t in args]
        self.param_bytes = memory.param_bytes(model.module)
        forward = forward_fn(model.module, self.example)
        self._torch = torch

        def call() -> Any:
            with torch.inference_mode():
                return forward()

        self.call = call

    def output(self) -> Any:
        out = self.call()  # type: ignore[misc]
        return (out[0] if isinstance(out, tuple) else out).numpy()
