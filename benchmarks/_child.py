"""Run one benchmark variant in its own process: ``python -m benchmarks._child MOD:FUNC JSON``.

The parent (``benchmarks._common.run_child``) samples this process tree's
memory while this process calls the function and prints its result as one
JSON line.
"""

from __future__ import annotations

import importlib
import json
import sys

from ._common import RESULT_MARKER


def main(argv: list[str]) -> None:
    target, kwargs_json = argv
    module_name, function_name = target.split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    result = function(**json.loads(kwargs_json))
    print(RESULT_MARKER + json.dumps(result, default=str), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
