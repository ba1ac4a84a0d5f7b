"""The kernel's view of this process's mappings (/proc/self/smaps), for tests of huge-page advice."""

from __future__ import annotations

from pathlib import Path

SMAPS = Path("/proc/self/smaps")


def huge_page_advised(address: int) -> bool:
    """Whether the mapping holding ``address`` carries the huge-page advice (VmFlags ``hg``)."""
    inside = False
    for line in SMAPS.read_text().splitlines():
        head = line.split(" ", 1)[0]
        if "-" in head and not head.endswith(":"):
            lo, hi = (int(v, 16) for v in head.split("-"))
            inside = lo <= address < hi
        elif inside and line.startswith("VmFlags:"):
            return "hg" in line.split()[1:]
    return False
