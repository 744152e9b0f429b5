# ruff: noqa: F821  (lit injects `config`)
# lit configuration for Tessera's IR tests: `RUN: tessera-opt %s ... | filecheck %s`.
import os
import shutil
import sys

import lit.formats

config.name = "tessera"
config.test_format = lit.formats.ShTest(execute_external=False)
config.suffixes = [".mlir", ".py"]
config.excludes = ["lit.cfg.py", "Output"]
config.test_source_root = os.path.dirname(__file__)
config.environment["PYTHONUNBUFFERED"] = "1"
for name in ("TESSERA_CACHE_DIR", "HOME", "PATH"):
    if name in os.environ:
        config.environment[name] = os.environ[name]

# Use the tools of the Python that runs lit, so a virtual environment needs no activation.
bindir = os.path.dirname(sys.executable)
for tool in ("tessera-opt", "filecheck"):
    path = os.path.join(bindir, tool)
    if not os.path.exists(path):
        path = shutil.which(tool) or tool
    config.substitutions.append((rf"(?<![\w-]){tool}(?![\w-])", path))
config.substitutions.append(("%python", sys.executable))
if shutil.which("ptxas"):
    config.available_features.add("ptxas")
