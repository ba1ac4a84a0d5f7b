"""What else slows the timed CPU while a point is measured: other work on the machine (load average, Linux's CPU
pressure, this process's run-queue wait, the hypervisor's steal) and the CPUs' clock."""

from __future__ import annotations

import os
import time


def cpu_mhz() -> float | None:
    """The CPUs' mean current clock (MHz) as /proc/cpuinfo reports it, None where it does not."""
    try:
        with open("/proc/cpuinfo") as f:
            found = [float(line.split(":", 1)[1]) for line in f if line.lower().startswith("cpu mhz")]
    except (OSError, ValueError, IndexError):
        return None
    return round(sum(found) / len(found), 1) if found else None


def psi_cpu_some() -> dict[str, float]:
    """The "some" line of Linux's CPU pressure (PSI) as {"avg10": ..., "total": ...}; {} where there is none."""
    try:
        with open("/proc/pressure/cpu") as f:
            return {key: float(value) for key, value in (item.split("=") for item in f.readline().split()[1:])}
    except (OSError, ValueError):
        return {}


def cpu_contention() -> dict:
    """Load average and CPU pressure (PSI): other work on the machine is the main source of CPU timing noise."""
    load = _load_average()
    psi = psi_cpu_some()
    pressure = psi.get("avg10")
    return {"load_avg_1m": None if load is None else load[0], "cpu_pressure_some_avg10": pressure}


def run_delay_ns() -> int | None:
    """Nanoseconds this process's threads spent runnable but waiting for a CPU (Linux schedstat), None if unknown.

    Unlike machine-wide pressure, this is the waiting of *this* process: another task on its CPU raises it, load
    on the other CPUs does not.
    """
    total, found = 0, False
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/schedstat") as f:
                total += int(f.read().split()[1])
                found = True
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
    return total if found else None


def contention_counters() -> dict:
    """Cumulative counters of CPU contention now: this process's run-queue wait, PSI's "some" stall time and the
    hypervisor's steal ticks.

    Read before and after a point's sampling and turned into shares by :func:`contention_since`; a counter the
    OS lacks (no PSI, no schedstat, not Linux) is simply absent.
    """
    counters: dict = {"wall_s": time.monotonic()}
    wait = run_delay_ns()
    if wait is not None:
        counters["wait_ns"] = wait
    psi = psi_cpu_some()
    if "total" in psi:
        counters["stall_us"] = int(psi["total"])
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
        counters["steal_ticks"], counters["all_ticks"] = ticks[7], sum(ticks)
    except (OSError, ValueError, IndexError):
        pass
    return counters


def contention_since(start: dict, threads: int = 1) -> dict:
    """Shares of the time since ``start``: ``cpu_wait``, this process's ``threads`` waiting for their CPU while
    runnable; ``cpu_pressure``, some task anywhere waiting for a CPU (PSI); ``cpu_steal``, stolen by the hypervisor.

    A steady competitor on the timed CPU slows every sample alike, so a point can be tight and still inflated:
    ``cpu_wait`` sees exactly that competitor, ``cpu_pressure`` the machine as a whole. None where a counter is
    missing.
    """
    end = contention_counters()
    wall = end["wall_s"] - start["wall_s"]
    shares: dict = {"cpu_wait": None, "cpu_pressure": None, "cpu_steal": None}
    if wall > 0 and "wait_ns" in start and "wait_ns" in end:
        waited = (end["wait_ns"] - start["wait_ns"]) / 1e9 / wall / max(1, threads)
        shares["cpu_wait"] = round(min(1.0, max(0.0, waited)), 4)
    if wall > 0 and "stall_us" in start and "stall_us" in end:
        shares["cpu_pressure"] = round(min(1.0, (end["stall_us"] - start["stall_us"]) / 1e6 / wall), 4)
    if "all_ticks" in start and "all_ticks" in end and end["all_ticks"] > start["all_ticks"]:
        stolen = (end["steal_ticks"] - start["steal_ticks"]) / (end["all_ticks"] - start["all_ticks"])
        shares["cpu_steal"] = round(stolen, 4)
    return shares


def _load_average() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:
        return None
