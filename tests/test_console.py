"""What the terminal shows of a run through the default profile: a failed job's log, not only
its command."""

import subprocess

import yaml

from conftest import REPO, SNAKEMAKE

LINE = "lsqueeze data: error: file number 42 is bad"  # not in the command: the shell computes it
PROFILE = REPO / "workflow" / "profiles" / "default"
FAILING = '''
rule fail:
    output: "never.txt"
    log: "fail.log"
    shell: "echo lsqueeze data: error: file number $((6 * 7)) is bad > {log}; exit 1"
'''


def _run(tmp_path, *args):
    (tmp_path / "Snakefile").write_text(FAILING)
    return subprocess.run([SNAKEMAKE, "-s", str(tmp_path / "Snakefile"), "--directory",
                           str(tmp_path), *args], capture_output=True, text=True, timeout=300)


def test_default_profile_prints_a_failed_jobs_log(tmp_path):
    assert yaml.safe_load((PROFILE / "config.yaml").read_text())["show-failed-logs"] is True
    proc = _run(tmp_path, "--profile", str(PROFILE), "--cores", "1")
    assert proc.returncode != 0
    assert LINE in proc.stdout + proc.stderr
    # without the profile, Snakemake names the log file but does not print it
    proc = _run(tmp_path, "--cores", "1")
    assert proc.returncode != 0 and LINE not in proc.stdout + proc.stderr
