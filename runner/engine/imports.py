"""Heavy libraries the runner imports late, and how.

papermill imports pyarrow when it is installed (it is: the notebooks read Parquet), for HDFS paths this
runner never gives it: about 40 MB and 0.2 s in a process that otherwise needs neither numpy nor pyarrow.
The kernels, which do read Parquet, are other processes and are not affected.
"""

from __future__ import annotations

import sys
from types import ModuleType


def papermill() -> ModuleType:
    """papermill, imported without pyarrow unless this process already has it (papermill then says that HDFS
    paths need pyarrow, which is true enough: the runner passes local paths only)."""
    if "papermill" not in sys.modules:
        blocked = "pyarrow.fs" not in sys.modules
        if blocked:
            sys.modules["pyarrow.fs"] = None  # type: ignore[assignment]  # an import of it raises ImportError
        try:
            import papermill  # noqa: F401
        finally:
            if blocked:
                del sys.modules["pyarrow.fs"]  # a later `import pyarrow.fs` in this process works as usual
    return sys.modules["papermill"]
