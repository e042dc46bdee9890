"""`lsqueeze pull`: fetch a run's results from the DVC remote, then restore Snakemake's state.

The repository's default remote is a directory beside the clone (`../lsqueeze-dvc-remote`): it
exists where the run was pushed from, not in someone else's fresh clone, where a bare `dvc pull`
says "Everything is up to date" and then "Checkout failed". This checks the remote first and says
in one line what is wrong and how to point it elsewhere.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HOW = ("point it at the store the results were pushed to: `dvc remote modify {name} url "
       "s3://bucket/path | ssh://user@host/path | /shared/dir` (README, \"Versioning with DVC\"), "
       "or run the pipeline with `dvc repro`")


class RemoteError(Exception):
    """A DVC remote that cannot serve a pull; the message is one line for the user."""


def check_remote(root=".", name: str | None = None) -> str:
    """The default (or named) remote's URL, if it can be read from here; else RemoteError."""
    from dvc.exceptions import DvcException
    from dvc.fs import get_cloud_fs
    from dvc.repo import Repo
    from dvc_objects.fs.local import LocalFileSystem

    try:
        with Repo(str(root)) as repo:
            name = name or repo.config["core"].get("remote")
            if not name:
                raise RemoteError("no default DVC remote is configured: add one with "
                                  "`dvc remote add -d team s3://bucket/path` (or ssh://, a directory)")
            if name not in repo.config["remote"]:
                raise RemoteError(f"DVC remote {name!r} is not configured (known: "
                                  f"{', '.join(sorted(repo.config['remote'])) or 'none'})")
            cls, config, path = get_cloud_fs(repo.config, name=name)
            url = str(repo.config["remote"][name]["url"])
            if issubclass(cls, LocalFileSystem):
                if not Path(path).is_dir():
                    raise RemoteError(f"DVC remote {name!r} is {path}, which does not exist on this "
                                      f"machine; " + HOW.format(name=name))
                return url
            try:
                if not cls(**config).exists(path):
                    raise RemoteError(f"DVC remote {name!r} ({url}) has nothing at {path}; "
                                      + HOW.format(name=name))
            except RemoteError:
                raise
            except Exception as exc:  # missing plugin, credentials, network: one line, not a trace
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise RemoteError(f"DVC remote {name!r} ({url}) cannot be read: {first}") from exc
            return url
    except DvcException as exc:
        raise RemoteError(f"DVC: {str(exc).strip().splitlines()[0]}") from exc


def pull(root=".", name: str | None = None, restore: bool = True) -> int:
    """Check the remote, `dvc pull` from it, then `lsqueeze restore` (unless restore=False)."""
    check_remote(root, name)
    # The repository commits no dvc.lock of its own (a committed one goes stale with every code
    # change); a commit that recorded a run has one, and that is what a pull fetches.
    if not (Path(root) / "dvc.lock").is_file():
        raise RemoteError("no dvc.lock here: this commit records no run to pull; check out the "
                          "commit that recorded one (`dvc repro`, then `git add dvc.lock metrics`), "
                          "or run the pipeline with `dvc repro`")
    cmd = [sys.executable, "-m", "dvc", "pull"] + (["--remote", name] if name else [])
    rc = subprocess.run(cmd, cwd=root).returncode
    if rc != 0:
        raise RemoteError(f"`dvc pull` failed (exit {rc}); its messages are above. Do not rerun it "
                          "with --force: that deletes every output under results/ the remote "
                          "lacks, your own runs included; fix the remote instead (" +
                          HOW.format(name=name or "<remote>") + ")")
    if restore:
        from lsqueeze.plan import restore as _restore

        done = _restore.restore(root=Path(root))
        print(f"restored Snakemake metadata of {done['records']} outputs and the time order of "
              f"{done['files']} files")
    return 0
