import os
import sys
from pathlib import Path

import lsqueeze


def _checkout_src() -> Path | None:
    """The src/ of the checkout in the working directory, where its package is not the one this
    interpreter imported (a virtual environment installed another checkout's): a job's command
    as `snakemake -p` prints it, rerun by hand from the checkout, must run the code the workflow
    ran (the workflow puts the Snakefile's src/ first on PYTHONPATH; a hand-run shell does not)."""
    here = Path.cwd()
    src = here / "src"
    if not ((here / "Snakefile").is_file() and (src / "lsqueeze" / "__init__.py").is_file()):
        return None
    if Path(lsqueeze.__file__).resolve().parent == (src / "lsqueeze").resolve():
        return None
    return src


src = None if os.environ.get("LSQUEEZE_CHECKOUT_SRC") else _checkout_src()
if src is not None:
    path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = f"{src}{os.pathsep}{path}" if path else str(src)
    os.environ["LSQUEEZE_CHECKOUT_SRC"] = str(src)  # once: never a loop
    os.execv(sys.executable, [sys.executable, "-m", "lsqueeze", *sys.argv[1:]])

from lsqueeze.cli import main  # noqa: E402  (after the switch to the checkout's package)

sys.exit(main())
