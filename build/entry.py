"""The frozen executable's entry point: the same `main` as the `ollamalike` console script."""

import os
import sys

# The bundle's own modules come first, but never let the working directory supply a module that is
# not bundled (PyInstaller leaves it off sys.path; this keeps it so whatever the bootloader does).
try:
    _cwd = os.getcwd()
except OSError:
    _cwd = ""
sys.path[:] = [p for p in sys.path if p not in ("", ".", _cwd)]

from ollamalike.cli.app import main  # noqa: E402

if __name__ == "__main__":
    main()
