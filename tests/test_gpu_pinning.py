"""Local GPU pinning (lsqueeze.runtime.pinning): N fake devices, 2N concurrent jobs, never two on
one device."""

import multiprocessing as mp
import os
import subprocess
import sys
import time

import pytest

from lsqueeze.runtime import pinning as gpu


def _job(devices, lock_dir, hold_s, queue):
    """One 'GPU job': pin a device, record the interval it held it, release by exiting."""
    env = {"CUDA_VISIBLE_DEVICES": ",".join(devices), gpu.ENV_LOCK_DIR: str(lock_dir)}
    dev = gpu.pin_process(env)
    t0 = time.monotonic()
    time.sleep(hold_s)
    queue.put((os.getpid(), dev, env["CUDA_VISIBLE_DEVICES"], t0, time.monotonic()))
    # no explicit release: the lock must die with the process, as for a killed training job


def _run_jobs(target, args, count):
    """`count` jobs, each a fresh process (like Snakemake's shell jobs), all started at once;
    returns what each put on the queue, after checking every job exited cleanly."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, queue)) for _ in range(count)]
    for p in procs:
        p.start()
    records = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    return records


@pytest.mark.parametrize("n", [1, 3])
def test_2n_jobs_never_share_a_device(tmp_path, n):
    devices = [str(i) for i in range(n)]
    records = _run_jobs(_job, (devices, tmp_path, 0.4), 2 * n)
    assert len(records) == 2 * n
    for _pid, dev, visible, _t0, _t1 in records:
        assert dev in devices and visible == dev  # the job sees exactly its own device
    assert {r[1] for r in records} == set(devices)  # all devices kept busy
    by_dev = {}
    for _pid, dev, _v, t0, t1 in records:
        by_dev.setdefault(dev, []).append((t0, t1))
    for dev, spans in by_dev.items():
        spans.sort()
        for (_, end), (start, _) in zip(spans, spans[1:]):
            assert start >= end, f"device {dev} held by two jobs at once: {spans}"


def test_threads_with_own_handles_exclude_each_other(tmp_path):
    """flock locks belong to the open file, so even two leases in one process exclude each other."""
    a = gpu.acquire(["0", "1"], tmp_path, start=0)
    b = gpu.acquire(["0", "1"], tmp_path, start=0)
    assert {a.device, b.device} == {"0", "1"}
    with pytest.raises(TimeoutError):
        gpu.acquire(["0", "1"], tmp_path, timeout=0.3, poll=0.05)
    a.release()
    c = gpu.acquire(["0", "1"], tmp_path, timeout=5, start=1)
    assert c.device == a.device
    b.release()
    c.release()


def test_lock_is_freed_when_the_holder_is_killed(tmp_path):
    code = ("import sys, time; from lsqueeze.runtime import pinning as gpu; "
            f"l = gpu.acquire(['0'], {str(tmp_path)!r}); print(l.device, flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "0"
        with pytest.raises(TimeoutError):
            gpu.acquire(["0"], tmp_path, timeout=0.3, poll=0.05)
    finally:
        holder.kill()
        holder.wait()
    lease = gpu.acquire(["0"], tmp_path, timeout=5)
    assert lease.device == "0"
    lease.release()


def test_visible_devices_parsing():
    assert gpu.visible_devices({"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert gpu.visible_devices({"CUDA_VISIBLE_DEVICES": "GPU-ab12,GPU-cd34"}) == ["GPU-ab12",
                                                                                "GPU-cd34"]
    assert gpu.visible_devices({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert gpu.visible_devices({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    assert gpu.visible_devices({"CUDA_VISIBLE_DEVICES": "1,-1,2"}) == ["1"]  # CUDA stops there


def test_noop_without_gpus_or_when_disabled(tmp_path):
    env = {"CUDA_VISIBLE_DEVICES": "", gpu.ENV_LOCK_DIR: str(tmp_path / "locks")}
    assert gpu.pin_process(env) is None
    assert env["CUDA_VISIBLE_DEVICES"] == "" and not (tmp_path / "locks").exists()
    env = {"CUDA_VISIBLE_DEVICES": "0,1", gpu.ENV_PINNING: "0",
           gpu.ENV_LOCK_DIR: str(tmp_path / "locks")}
    assert gpu.pin_process(env) is None
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_slurm_jobs_get_their_own_lock_namespace(tmp_path):
    a = gpu.default_lock_dir({"SLURM_JOB_ID": "11"})
    b = gpu.default_lock_dir({"SLURM_JOB_ID": "12"})
    assert a != b and a != gpu.default_lock_dir({})
    assert gpu.default_lock_dir({gpu.ENV_LOCK_DIR: str(tmp_path)}) == tmp_path


def test_cli_pins_before_training(tmp_path):
    """The CLI's GPU commands call the pinning: with fake devices 0,1 and device 0 taken, a
    `lsqueeze train` process must see only device 1 (checked before any CUDA work)."""
    held = gpu.acquire(["0"], tmp_path, start=0)
    code = ("import os, sys; from lsqueeze import cli; "
            "cli._pin_gpu('train'); print(os.environ['CUDA_VISIBLE_DEVICES'])")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0,1", gpu.ENV_LOCK_DIR: str(tmp_path)}
    env.pop(gpu.ENV_PINNING, None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60)
    held.release()
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


def _slot_job(devices, lock_dir, k, hold_s, queue):
    env = {"CUDA_VISIBLE_DEVICES": ",".join(devices), gpu.ENV_LOCK_DIR: str(lock_dir),
           gpu.ENV_JOBS_PER_GPU: str(k)}
    dev = gpu.pin_process(env)
    t0 = time.monotonic()
    time.sleep(hold_s)
    queue.put((dev, env["CUDA_VISIBLE_DEVICES"], t0, time.monotonic()))


def test_k_jobs_share_each_device_never_more(tmp_path):
    """LSQUEEZE_JOBS_PER_GPU=2 on 2 fake devices, 6 jobs: at most 2 on a device at any moment,
    both devices used, and the first 4 run at once (all slots filled)."""
    devices, k = ["0", "1"], 2
    records = _run_jobs(_slot_job, (devices, tmp_path, k, 1.0), 6)
    assert all(dev in devices and visible == dev for dev, visible, _, _ in records)
    for dev in devices:
        spans = [(t0, t1) for d, _, t0, t1 in records if d == dev]
        for t, _ in spans:  # jobs holding this device at the moment one of them started
            assert sum(a <= t < b for a, b in spans) <= k, f"device {dev}: more than {k} jobs"
    starts = sorted(t0 for _, _, t0, _ in records)
    assert starts[3] - starts[0] < 0.9  # four slots: four jobs ran together


def test_slots_fill_every_device_before_doubling_up(tmp_path):
    leases = [gpu.acquire(["0", "1"], tmp_path, start=0, per_device=2) for _ in range(4)]
    assert [lease.device for lease in leases] == ["0", "1", "0", "1"]
    with pytest.raises(TimeoutError):
        gpu.acquire(["0", "1"], tmp_path, timeout=0.3, poll=0.05, per_device=2)
    # a one-job-per-GPU process waits for slot 0 only: it excludes, and is excluded by, slot 0
    leases[0].release()
    solo = gpu.acquire(["0", "1"], tmp_path, timeout=5, per_device=1)
    assert solo.device == "0"
    for lease in [solo] + leases[1:]:
        lease.release()


def test_jobs_per_gpu_is_validated():
    assert gpu.jobs_per_gpu({}) == 1
    assert gpu.jobs_per_gpu({gpu.ENV_JOBS_PER_GPU: "4"}) == 4
    for bad in ("0", "two", "-1"):
        with pytest.raises(ValueError, match=gpu.ENV_JOBS_PER_GPU):
            gpu.jobs_per_gpu({gpu.ENV_JOBS_PER_GPU: bad})
