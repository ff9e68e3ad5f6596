"""`make bench` output: the table renders every cell, and rewriting results.md keeps the hand-written notes.

No timings are asserted here: the figures below are made up; the benchmarks themselves are `make bench`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench import report
from bench import requests as bench_requests
from bench.e2e import JobFigures


def figures(n: int = 10_000, c: int = 50, watchers: int = 1) -> JobFigures:
    return JobFigures(
        n=n, c=c, watchers=watchers, submit_seconds=0.3, web_stall_ms=80, seconds=11.0, status="completed",
        succeeded=n, failed=0, worker_cpu_seconds=4.5, worker_rss_start_mb=90, worker_rss_peak_mb=95,
        worker_rss_end_mb=94, progress_messages=60, latencies_ms=[10.0, 20.0, 300.0], watchers_final=watchers,
        reconnects=0,
    )  # fmt: skip


def baseline(seconds: float, *, complete: bool = True) -> dict[str, object]:
    return {"seconds": seconds, "cpu_seconds": 1.8, "complete": complete}


def test_the_table_has_one_row_per_cell_and_the_watchers_line() -> None:
    rows = [
        report.Row(db="sqlite", delay_ms=50, ours=figures(), peak_in_flight=50,
                   baselines={"aiohttp": baseline(10.5), "httpx": baseline(160.0, complete=False)}),
    ]  # fmt: skip
    watch = [report.WatchRow(db="postgresql", delay_ms=50, ours=figures(watchers=200))]
    engine = [
        {"variant": "bare-aiohttp", "loop": "asyncio", "n": 1000, "c": 200, "seconds": 0.2, "cpu_seconds": 0.12},
        {"variant": "FetchClient+lean", "loop": "asyncio", "n": 1000, "c": 200, "seconds": 0.5, "cpu_seconds": 0.3},
    ]
    text = report.render(rows, watch, engine, machine="- test machine", elapsed=12.0, quick=False)

    table = [line for line in text.splitlines() if line.startswith("| sqlite")]
    assert len(table) == 1
    cells = [cell.strip() for cell in table[0].strip("|").split("|")]
    header = [cell.strip() for cell in report.HEADER.strip("|").split("|")]
    assert len(cells) == len(header)
    assert cells[header.index("ours/aiohttp")] == "0.95"  # 10.5 s / 11.0 s
    assert cells[header.index("httpx s")] == "~160.00"  # extrapolated
    assert cells[header.index("ideal s")] == "10.00"  # ceil(10000 / 50) * 50 ms
    assert cells[header.index("runs: ours s, aiohttp s")] == "1"
    assert "200/200 ended with the final counts" in text
    assert "| FetchClient+lean | asyncio | 0.50 | 0.300 | 2.50 |" in text


def test_rewriting_results_keeps_the_notes_around_the_block(tmp_path: Path) -> None:
    path = tmp_path / "results.md"
    report.write_results(path, "first run")
    text = path.read_text()
    path.write_text("# Title\n\nintro\n\n" + text[text.index(report.BEGIN) :] + "\n## Notes\n\nkept\n")

    report.write_results(path, "second run")

    text = path.read_text()
    assert "second run" in text and "first run" not in text
    assert text.startswith("# Title\n\nintro\n\n")
    assert text.endswith("\n## Notes\n\nkept\n")


def test_a_cells_own_block_is_appended_once_then_replaced_in_place(tmp_path: Path) -> None:
    path = tmp_path / "results.md"
    report.write_results(path, "the matrix")
    report.write_section(path, "requests", "requests, first run")
    path.write_text(path.read_text() + "\nnotes after\n")
    report.write_section(path, "requests", "requests, second run")
    report.write_section(path, "politeness", "polite")

    text = path.read_text()
    assert "the matrix" in text and "requests, first run" not in text
    assert text.count("<!-- requests:begin -->") == 1
    assert text.index("requests, second run") < text.index("notes after") < text.index("polite")


def test_a_cell_run_three_times_shows_the_median_run_and_the_ranges() -> None:
    aiohttp = {**baseline(10.5), "runs": [10.6, 10.4, 10.5]}
    row = report.Row(db="postgresql", delay_ms=50, ours=figures(), peak_in_flight=50,
                     baselines={"aiohttp": aiohttp, "httpx": baseline(15.0)}, ours_runs=[11.5, 11.0, 10.8])  # fmt: skip
    text = report.render([row], [], [], machine="- test machine", elapsed=1.0, quick=False)

    (line,) = [line for line in text.splitlines() if line.startswith("| postgresql")]
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    header = [cell.strip() for cell in report.HEADER.strip("|").split("|")]
    assert cells[header.index("runs: ours s, aiohttp s")] == "3: 10.80-11.50, 10.40-10.60"
    assert cells[header.index("ours/aiohttp")] == "0.95"  # the median runs: 10.5 s / 11.0 s


def test_the_fleet_table_compares_each_count_of_workers_with_one() -> None:
    one = figures(n=100_000, c=200)
    one.seconds, one.worker_cpu_seconds = 25.0, 22.0
    two = figures(n=100_000, c=400)
    two.seconds, two.worker_cpu_seconds = 14.0, 24.2
    fleet = [report.FleetRow(workers=1, delay_ms=20, ours=one), report.FleetRow(workers=2, delay_ms=20, ours=two)]
    text = report.render([], [], [], fleet=fleet, machine="- test machine", elapsed=1.0, quick=False)

    assert "C=200 each" in text
    assert "| 1 | 25.00 | 4,000 | 1.00 | 0.220 | +0% | - | - | completed, 100,000 ok |" in text
    assert "| 2 | 14.00 | 7,143 | 1.79 | 0.242 | +10% | - | - | completed, 100,000 ok |" in text


def test_the_requests_table_gives_ratios_to_the_gets_and_end_to_end_the_posts_share() -> None:
    args = argparse.Namespace(n=1000, c=10, delay_ms=50, repeats=3, e2e=True)
    rows = {
        "GET": [(2.0, 1.0, 0.1), (2.2, 1.1, 0.2), (2.1, 1.2, 0.15)],
        "POST (job request)": [(2.31, 1.0, 0.1)] * 3,
    }

    text = bench_requests.render(rows, args)

    assert "| GET | 2.10 | +0.0% | 0.15 | 1.10 | 1.100 | +0.0% |" in text
    assert "| POST (job request) | 2.31 | +10.0% | 0.10 | 1.00 | 1.000 | -9.1% |" in text
    assert bench_requests.section(args) == "requests-e2e-50ms"
    assert bench_requests.section(argparse.Namespace(e2e=False, delay_ms=0)) == "requests"


def test_each_request_variant_opens_one_turn_of_three() -> None:
    turns = [bench_requests._rotated(turn) for turn in range(3)]
    assert [turn[0] for turn in turns] == list(bench_requests.VARIANTS)
    assert all(sorted(turn) == sorted(bench_requests.VARIANTS) for turn in turns)
