"""What /proc says about a benchmarked process, shared by measure.py and perf_measure.py."""
from pathlib import Path


def own_run_ns(pid):
    """The CPU time of a process itself so far, in ns, without the children it reaped: the sum
    of its threads' run time (/proc/PID/task/*/schedstat, first field). A thread that already
    ended is not counted: neither pilot nor ContainerPilot ends threads while it runs checks."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            pass
    return total
