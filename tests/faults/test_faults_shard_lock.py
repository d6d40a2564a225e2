"""Shards share the output folder's lock; a plain run and a reindex hold it alone.

Without it a plain `run` started while shards run redoes their jobs (it cannot know they are
running), and a `reindex` merges a half-finished batch. Each side is refused at once, in one
line, and works once the other has ended.
"""
from __future__ import annotations

import errno

import pytest

from faultkit import Hold, Run, assert_consistent, done, make_project, one_cpu, run_cli
from pipeline.errors import OutputError
from pipeline.run.orchestrate import BusyError, hold_output, prepare, shard_jobs

BUSY = ("error: another nst-batch run is using {out} (lock .nst-batch.lock); wait for it to finish "
        "or choose another output folder\n")


def test_shards_share_the_lock_and_a_plain_run_or_reindex_holds_it_alone(tmp_path):
    with hold_output(tmp_path, shared=True):
        with hold_output(tmp_path, shared=True):          # a second shard
            with pytest.raises(BusyError, match="another nst-batch run is using"):
                with hold_output(tmp_path):               # a plain run or reindex
                    pass
    with hold_output(tmp_path):
        with pytest.raises(BusyError, match="a plain nst-batch run or reindex is using"):
            with hold_output(tmp_path, shared=True):
                pass
        with pytest.raises(BusyError):
            with hold_output(tmp_path):
                pass
    with hold_output(tmp_path):                           # released: free again, file and all
        pass
    assert (tmp_path / ".nst-batch.lock").is_file()


def test_on_a_filesystem_without_locks_a_shard_warns_and_runs_and_a_plain_run_stops(tmp_path, monkeypatch, caplog):
    def no_locks(fd, operation):
        raise OSError(errno.ENOSYS, "Function not implemented")   # Lustre mounted without flock

    monkeypatch.setattr("pipeline.run.output_lock.fcntl.flock", no_locks)
    with hold_output(tmp_path, shared=True):
        pass
    assert "this shard runs without the lock" in caplog.text
    with pytest.raises(OutputError, match=r"^cannot lock .*\.nst-batch\.lock: Function not implemented$"):
        with hold_output(tmp_path):
            pass


@pytest.mark.slow
def test_a_plain_run_and_reindex_are_refused_while_a_shard_runs_and_a_second_shard_is_not(tmp_path):
    manifest = make_project(tmp_path, contents=4, styles=1, steps=3)   # 4 jobs
    out, logs, hold = tmp_path / "out", tmp_path / "logs", Hold(tmp_path / "hold")
    _, jobs = prepare(manifest)
    # Two shards that both have work (ids are fixed by the inputs: the same count every time).
    count = next(n for n in range(2, 9) if sum(bool(shard_jobs(jobs, i, n)) for i in range(n)) >= 2)
    i, k = [i for i in range(count) if shard_jobs(jobs, i, count)][:2]
    a, b = ({j.job_id for j in shard_jobs(jobs, s, count)} for s in (i, k))
    first = Run(logs, "run", str(manifest), "--shard", f"{i}/{count}", name="shard_a", cpus=one_cpu(0),
                env=hold.env())
    held = hold.next_running(first)                     # shard a is inside a job, holding the lock
    assert held in a

    second = run_cli(logs, "run", str(manifest), "--shard", f"{k}/{count}", name="shard_b")
    assert second.proc.returncode == 0, second.describe()
    assert set(done(out)) == b

    plain = run_cli(logs, "run", str(manifest), name="plain")
    assert plain.proc.returncode == 2, plain.describe()
    assert plain.stderr == BUSY.format(out=out) and plain.stdout == ""
    reindex = run_cli(logs, "reindex", str(out), name="reindex")
    assert reindex.proc.returncode == 2, reindex.describe()
    assert reindex.stderr == BUSY.format(out=out) and reindex.stdout == ""
    assert set(done(out)) == b, "a refused command must not run or record any job"
    assert not (out / "index.sqlite").exists()

    hold.release_all()
    assert first.wait() == 0, first.describe()
    reindex = run_cli(logs, "reindex", str(out), name="reindex2")
    assert reindex.proc.returncode == 0, reindex.describe()
    assert reindex.stdout.endswith(f": {len(a | b)} job(s) indexed\n")
    plain = run_cli(logs, "run", str(manifest), name="plain2")
    assert plain.proc.returncode == 0, plain.describe()
    assert f"4 job(s): {len(a | b)} already done;" in plain.stdout   # the shards' jobs are not redone
    assert_consistent(out, expect_done=4)
