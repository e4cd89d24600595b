"""Before and after, from the progress logs of two gateway runs of the same session.

    python bench/compare.py before.log after.log     # a Markdown table on stdout

``run.py`` prints one line per measured run (``worker route proto cN rK server req/s p99
cpu/req``); this reads those lines back, takes the ddx-llm / bare ratios within each round and
their median over the rounds, as :func:`gateway.summarize` does, for two runs side by side.  A
run that got no answer counts as 0 req/s.  For comparing two checkouts (say ``main`` and a
branch) measured one after the other on the same machine, when only the logs are at hand.
"""

from __future__ import annotations

import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

LINE = re.compile(
    r"^\s+(?P<worker>\w+)\s+(?P<route>\w+)\s+(?P<protocol>h1|h2c)\s+c(?P<c>\d+)\s+r(?P<round>\d+)"
    r"\s+(?P<server>[\w-]+)\s+(?P<rps>[\d.]+) req/s\s+p99\s+(?P<p99>[\d.]+) ms\s+cpu/req\s+"
    r"(?P<cpu>[\d.]+) ms"
)


def read(path: Path) -> dict[tuple, dict[int, dict[str, dict[str, float]]]]:
    """``{(worker, route, protocol, c): {round: {server: {rps, p99, cpu}}}}``."""
    found: dict[tuple, dict[int, dict[str, dict[str, float]]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    for line in path.read_text().splitlines():
        match = LINE.match(line)
        if match:
            key = (match["worker"], match["route"], match["protocol"], int(match["c"]))
            found[key][int(match["round"])][match["server"]] = {
                "rps": float(match["rps"]),
                "p99": float(match["p99"]),
                "cpu": float(match["cpu"]),
            }
    return found


def ratios(rounds: dict[int, dict[str, dict[str, float]]], server: str = "ddx") -> dict:
    """Medians over the rounds of ``server``/bare: req/s and p99; and ``server``'s CPU per
    request.  None where the bare app (or the server) never answered."""
    rps, p99, cpu = [], [], []
    for measured in rounds.values():
        ours, bare = measured.get(server), measured.get("bare")
        if not ours or not bare or not bare["rps"]:
            continue
        rps.append(ours["rps"] / bare["rps"])
        if ours["p99"] and bare["p99"]:
            p99.append(ours["p99"] / bare["p99"])
        if ours["cpu"]:
            cpu.append(ours["cpu"])
    median = lambda values: statistics.median(values) if values else None  # noqa: E731
    return {"rps": median(rps), "p99": median(p99), "cpu": median(cpu)}


def fmt(value: float | None, digits: int = 2) -> str:
    return "\u2013" if value is None else f"{value:.{digits}f}"


def table(before: Path, after: Path) -> list[str]:
    old, new = read(before), read(after)
    lines = [
        "| worker | route | proto | c | req/s ratio before | after | p99 ratio before | after "
        "| CPU ms/req before | after |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(set(old) | set(new)):
        b, a = ratios(old.get(key, {})), ratios(new.get(key, {}))
        lines.append(
            f"| {' | '.join(map(str, key))} | {fmt(b['rps'])} | **{fmt(a['rps'])}** | "
            f"{fmt(b['p99'])} | {fmt(a['p99'])} | {fmt(b['cpu'], 3)} | {fmt(a['cpu'], 3)} |"
        )
    return lines


if __name__ == "__main__":
    print("\n".join(table(Path(sys.argv[1]), Path(sys.argv[2]))))
