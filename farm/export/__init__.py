"""Export on the station: eager artifacts lowered to other runtimes, once.

    lower.py     torch module -> ONNX / ExecuTorch (.pte) bytes, fp32 and int8
    agree.py     a lowered model against eager on a seeded input set
    cache.py     (model, options, runtime, precision, batch) -> a cached artifact

torch, onnx, onnxruntime's quantizer and executorch are imported here, on the
station; the engine (`farm.engine`) never imports this package.
"""

from farm.export.cache import CannotLower, Exported, export

__all__ = ["CannotLower", "Exported", "export"]
