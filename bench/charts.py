"""The charts of ``BENCHMARKS.md`` (PNG, matplotlib): throughput against concurrency and
latency distributions, from one run's results."""

from __future__ import annotations

from pathlib import Path

COLORS = {
    "bare": "#888888",
    "ddx": "#1f6feb",
    "ddx-off": "#7ee0a1",
    "ddx-llm": "#1f6feb",
    "mlx_lm.server": "#e36209",
}
LABELS = {
    "bare": "bare Starlette",
    "ddx": "ddx-llm (all plugins, key)",
    "ddx-off": "ddx-llm (plugins off)",
}
ROUTE_TITLES = {
    "chat": "non-streamed chat (req/s)",
    "sse": "SSE, 202 chunks (streams/s)",
    "models": "GET /v1/models (req/s)",
}


def draw(results: dict, folder: Path) -> list[tuple[Path, str]]:
    """Write the charts into ``folder``; returns ``(path, caption)`` pairs."""
    import matplotlib

    matplotlib.use("Agg")
    images = []
    if "gateway" in results:
        images.append(gateway_throughput(results, folder))
        images.append(gateway_latency(results, folder))
    if "real" in results:
        images.append(real_throughput(results, folder))
    return images


def gateway_throughput(results: dict, folder: Path) -> tuple[Path, str]:
    import matplotlib.pyplot as plt

    summary = results["gateway"]["summary"]
    workers = sorted({r["worker"] for r in summary})
    routes = [r for r in ROUTE_TITLES if any(s["route"] == r for s in summary)]
    fig, axes = plt.subplots(
        len(workers), len(routes), figsize=(4.2 * len(routes), 3.4 * len(workers)), squeeze=False
    )
    for i, worker in enumerate(workers):
        for j, route in enumerate(routes):
            ax = axes[i][j]
            rows = [r for r in summary if r["worker"] == worker and r["route"] == route]
            keys = [f"{r['protocol']} c{r['concurrency']}" for r in rows]
            width = 0.27
            for k, server in enumerate(("bare", "ddx", "ddx-off")):
                values = [r[server]["rps"] for r in rows]
                xs = [x + (k - 1) * width for x in range(len(rows))]
                ax.bar(xs, values, width, color=COLORS[server], label=LABELS[server])
            for x, row in enumerate(rows):
                ax.annotate(
                    f"{row['ddx/bare']['rps'] or 0:.2f}",
                    (x, row["ddx"]["rps"]),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                )
            ax.set_xticks(range(len(rows)), keys, fontsize=8)
            ax.set_title(f"{ROUTE_TITLES[route]}, {worker}", fontsize=9)
            ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.suptitle("Gateway throughput by protocol and concurrency (labels: ddx-llm / bare)")
    fig.tight_layout()
    path = folder / "gateway-throughput.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path, "Gateway throughput against protocol and concurrency"


def gateway_latency(results: dict, folder: Path) -> tuple[Path, str]:
    import matplotlib.pyplot as plt

    rows = results["gateway"]["rows"]
    routes = [r for r in ROUTE_TITLES if any(s["route"] == r for s in rows)]
    fig, axes = plt.subplots(1, len(routes), figsize=(4.4 * len(routes), 3.6), squeeze=False)
    for j, route in enumerate(routes):
        ax = axes[0][j]
        for server in ("bare", "ddx", "ddx-off"):
            runs = [
                r
                for r in rows
                if r["route"] == route
                and r["server"] == server
                and r["worker"] == "asyncio"
                and r["protocol"] == "h1"
                and r["concurrency"] == max(x["concurrency"] for x in rows)
            ]
            if not runs:
                continue
            cdf = runs[0]["cdf"]
            points = [*range(1, 100), 99.5, 99.9][: len(cdf)]
            ax.plot(cdf, points, color=COLORS[server], label=LABELS[server])
        ax.set_xscale("log")
        ax.set_xlabel("latency (ms, log)")
        ax.set_ylabel("percentile")
        ax.set_title(f"{ROUTE_TITLES[route].split(' (')[0]}, h1, asyncio", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Latency distributions at the highest concurrency (first round)")
    fig.tight_layout()
    path = folder / "gateway-latency.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path, "Latency distributions, HTTP/1.1, asyncio worker"


def real_throughput(results: dict, folder: Path) -> tuple[Path, str]:
    import matplotlib.pyplot as plt

    aggregate = results["real"]["aggregate"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, kind in zip(axes, ("cold", "cached"), strict=True):
        keys = sorted((int(k.split("-c")[1]), k) for k in aggregate if k.startswith(kind))
        for server in ("ddx-llm", "mlx_lm.server"):
            values = [aggregate[k][server]["tokens_per_second"] for _, k in keys]
            ax.plot([c for c, _ in keys], values, marker="o", color=COLORS[server], label=server)
        ax.set_xscale("log", base=2)
        ax.set_xticks([c for c, _ in keys], [str(c) for c, _ in keys])
        ax.set_xlabel("concurrent requests")
        ax.set_ylabel("aggregate tokens/s")
        ax.set_title(f"{kind} prompts, non-streamed", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Real mode (SmolLM2-135M, CPU): throughput against concurrency")
    fig.tight_layout()
    path = folder / "real-throughput.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path, "Real-mode aggregate throughput against concurrency"
