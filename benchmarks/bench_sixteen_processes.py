"""16 real processes through the command line: K = 16 tiles on 16 ranks against the one-process run.

Runs what a user runs, each as its own child of this script:

    nerfxl train tiny --partitions 16 --devices 16 --steps S --log-every 1 --run-dir A
    nerfxl train tiny --partitions 16 --devices 1  --steps S --log-every 1 --run-dir B
    python benchmarks/compare_runs.py A B --loss-rtol 1e-5

and prints JSON: each training command's wall time, the peak RSS of every rank and of the launching
process, and compare_runs' result (per-step losses, parameters, a render). The library is not
involved in the measuring: a watcher in this script reads ``VmHWM`` (the peak resident set) from
``/proc/<pid>/status`` of every descendant of the command every ``--interval`` seconds and keeps
each process's largest reading. The ranks are the ``multiprocessing`` spawn children of the command,
numbered in the order they started (the launcher starts rank 0 first; ties broken by pid). A rank's
last reading is taken at most one interval before it exits, after its final checkpoint.

The model is the tiny preset with ``--field.density-shift 1.0`` (tiles visibly opaque from step 0, as
in tests/bench/test_compare_runs.py), 256 rays per step, on the tiny procedural city (generated into
a temporary folder unless ``--data`` is given). Needs Linux (/proc).

    python benchmarks/bench_sixteen_processes.py --steps 8 [--data TINY_CITY] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024.0 * 1024.0


def child_env() -> dict[str, str]:
    from nerfxl.parallel.launch import environment_outside_launcher

    return environment_outside_launcher(ROOT)


def process_table() -> dict[int, tuple[int, int]]:
    """pid → (parent pid, start time in clock ticks) of every process, from /proc."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state, ppid, ...
        table[int(entry.name)] = (int(fields[1]), int(fields[19]))
    return table


def descendants(pid: int, table: dict[int, tuple[int, int]]) -> list[int]:
    found, frontier = [], {pid}
    while frontier:
        frontier = {p for p, (parent, _) in table.items() if parent in frontier}
        found += sorted(frontier)
    return found


def vm_hwm_bytes(pid: int) -> int | None:
    """The process's peak resident set so far (VmHWM), or None once it has exited."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def run_watched(command: list[str], cwd: Path, timeout_s: float, interval_s: float) -> dict:
    """Run ``command``, sampling the peak RSS of it and all its descendants until it exits."""
    log = tempfile.TemporaryFile(mode="w+")
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=child_env())
    peaks: dict[int, int] = {}
    started: dict[int, int] = {}
    kinds: dict[int, bytes] = {}
    try:
        while True:
            done = proc.poll() is not None
            table = process_table()
            for pid in [proc.pid, *descendants(proc.pid, table)]:
                # Seen between fork and exec, a child still shows its parent's command line (and a copy of
                # its memory): the peak counts from the exec on. (Command line first, then the peak.)
                command_now = cmdline(pid) if b"spawn_main" not in kinds.get(pid, b"") else kinds[pid]
                hwm = vm_hwm_bytes(pid)
                if hwm is None or not command_now:
                    continue
                if command_now != kinds.get(pid):
                    kinds[pid], peaks[pid] = command_now, 0
                    started[pid] = table.get(pid, (0, 0))[1]
                peaks[pid] = max(peaks.get(pid, 0), hwm)
            if done:
                break
            if time.perf_counter() - t0 > timeout_s:
                raise TimeoutError(f"{' '.join(command)} still running after {timeout_s} s")
            time.sleep(interval_s)
    finally:
        if proc.poll() is None:
            proc.kill()  # the launcher's ranks watch it and exit within a second
            proc.wait()
    wall = time.perf_counter() - t0
    log.seek(0)
    output = log.read()
    log.close()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {proc.returncode}:\n{output[-4000:]}")
    ranks = sorted((pid for pid, cmd in kinds.items() if b"spawn_main" in cmd), key=lambda p: (started[p], p))
    return {
        "command": " ".join(map(str, command)),
        "wall_s": round(wall, 2),
        "launcher_peak_rss_mib": round(peaks.get(proc.pid, 0) / MIB, 1),
        "rank_peak_rss_mib": [round(peaks[p] / MIB, 1) for p in ranks],
    }


def train_command(data: Path, run_dir: Path, partitions: int, devices: int, steps: int, batch_rays: int) -> list[str]:
    return [sys.executable, "-m", "nerfxl.cli", "train", "tiny", "--data", str(data), "--partitions", str(partitions),
            "--devices", str(devices), "--steps", str(steps), "--log-every", "1", "--batch-rays", str(batch_rays),
            "--field.density-shift", "1.0", "--no-progress", "--run-dir", str(run_dir)]


def measure(data: Path, work: Path, processes: int = 16, steps: int = 8, batch_rays: int = 256,
            loss_rtol: float = 1e-5, timeout_s: float = 1200, interval_s: float = 0.1) -> dict:
    """Train K = ``processes`` tiles on that many processes and on one, and compare the two runs."""
    work = Path(work)
    many, one = work / f"d{processes}", work / "d1"
    runs = {}
    for name, devices, run_dir in ((f"d{processes}", processes, many), ("d1", 1, one)):
        runs[name] = run_watched(train_command(data, run_dir, processes, devices, steps, batch_rays), work,
                                 timeout_s, interval_s)
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "compare_runs.py"), str(many), str(one),
                             "--loss-rtol", str(loss_rtol)], capture_output=True, text=True, cwd=work, env=child_env(),
                            timeout=timeout_s)
    if result.returncode not in (0, 1) or not result.stdout.strip():
        raise RuntimeError(f"compare_runs.py failed ({result.returncode}):\n{result.stderr[-4000:]}")
    compared = json.loads(result.stdout)
    rss = runs[f"d{processes}"]["rank_peak_rss_mib"]
    return {
        "processes": processes, "partitions": processes, "steps": steps, "batch_rays": batch_rays,
        "cpu_count": os.cpu_count(), "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "runs": runs,
        "ranks_seen": len(rss),
        "rank_peak_rss_mib_max": max(rss) if rss else None,
        "rank_peak_rss_mib_median": statistics.median(rss) if rss else None,
        "rank_peak_rss_mib_sum": round(sum(rss), 1),
        "compare_runs": compared,
        "trajectory_agrees": result.returncode == 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="a tiny city (generated when not given)")
    parser.add_argument("--processes", type=int, default=16, help="D = K")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-rays", type=int, default=256)
    parser.add_argument("--loss-rtol", type=float, default=1e-5)
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between /proc samples")
    parser.add_argument("--timeout", type=float, default=1200, help="per command")
    parser.add_argument("--work", type=Path, default=None, help="where the runs go (a temporary folder if not given)")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench16-") as tmp:
        work = (args.work or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        data = None if args.data is None else args.data.resolve()
        if data is None:
            from nerfxl.data.city import generate_city

            data = generate_city(Path(tmp) / "tiny-city", size="tiny", seed=0, progress=False)
        result = measure(data, work, args.processes, args.steps, args.batch_rays, args.loss_rtol, args.timeout,
                         args.interval)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    sys.exit(0 if result["trajectory_agrees"] else 1)


if __name__ == "__main__":
    main()
