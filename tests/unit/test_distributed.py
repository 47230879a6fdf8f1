"""Which process writes in a distributed run (migrainemamba.distributed), without a process group."""

from __future__ import annotations

import subprocess
import sys

import pytest

from migrainemamba import distributed

RANK_VARS = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID", "SLURM_NTASKS")


@pytest.fixture
def clean_env(monkeypatch):
    for var in RANK_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    ("env", "zero"),
    [
        ({}, True),  # one process
        ({"LOCAL_RANK": "0", "NODE_RANK": "0"}, True),  # Lightning's launcher, rank 0 after its first fit
        ({"LOCAL_RANK": "1", "NODE_RANK": "0"}, False),  # the process it launched
        ({"NODE_RANK": "1"}, False),  # first process of the second node
        ({"RANK": "0", "LOCAL_RANK": "0"}, True),  # torchrun
        ({"RANK": "3", "LOCAL_RANK": "0"}, False),  # torchrun, local rank 0 of another node
        ({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}, True),  # an interactive SLURM job, one task
        ({"SLURM_PROCID": "1", "SLURM_NTASKS": "2"}, False),  # srun starting two tasks
    ],
)
def test_only_global_rank_zero_writes(clean_env, env, zero):
    for key, value in env.items():
        clean_env.setenv(key, value)
    assert distributed.is_global_zero() is zero


def test_without_a_process_group_everything_is_a_no_op(clean_env):
    assert distributed.world_size() == 1
    assert distributed.all_gather_object({"a": 1}) == [{"a": 1}]
    distributed.barrier()
    with distributed.ranks(), distributed.ranks():  # nested (a stage inside the robustness run)
        pass


def test_abort_stops_the_launched_processes(clean_env):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    distributed._children.append(proc)
    with pytest.raises(RuntimeError, match="boom"), distributed.ranks():
        raise RuntimeError("boom")
    assert proc.poll() is not None and not distributed._children


def test_finish_reports_a_failed_rank(clean_env):
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    distributed.remember_children(type("Launcher", (), {"procs": [proc]})())
    with pytest.raises(RuntimeError, match="exit code 3"):
        distributed.finish(timeout=30)
    assert not distributed._children
