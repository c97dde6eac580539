"""A fuzzing campaign: generate mutated files, ingest them with the real CLI, check and report.

    python -m tests.fuzz.campaign --n N --seed S --out DIR [--report PATH] [--workers W]

1. N files are generated into ``DIR/src/<class>/<index>_<seedname>``, spread evenly over the mutation
   classes of :data:`tests.fuzz.mutators.MUTATORS`. Slices of a seed series are mutated as runs of 2 to 6
   consecutive slices that share new Study/Series UIDs (so series assembly sees mutated series); every
   other DICOM file gets Study/Series/SOP Instance UIDs of its own, except that one unit in ten also
   gets a second, differently mutated copy of one of its instances (duplicate handling).
   ``DIR/generated.csv`` lists every file with its class and seed.
2. ``python -m pipeline --debug ingest DIR/src --workdir DIR/w --timings DIR/timings.csv`` runs once, as a
   subprocess of this interpreter (same venv), with ``SCANLENS_SECRET`` set; the resident memory of its
   whole process tree (the CLI and every worker, summed) is sampled every 50 ms.
3. The manifest, quarantine table, catalogue and timings are read back and checked: every generated
   file must be in the manifest exactly once, as ``catalogued`` or ``quarantined``, every quarantined
   one with a non-empty reason. The outcome table by class, exit code, wall time, peak RSS, the
   slowest file and the files over :data:`SLOW_FILE_SECONDS` go to the markdown report (``--report``,
   default ``DIR/report.md``) and a JSON file next to it; :func:`run_campaign` returns a
   :class:`CampaignResult` for tests.

The exit status is 0 when the campaign ran and every check held (see :attr:`CampaignResult.violations`),
1 otherwise.

Per-file seconds: the ingest's ``--timings`` table, summed per file: its probe plus the build of the
scan it belongs to (a series' build counts for each of its slices). Each is wall-clock time
(``time.perf_counter``) around the task in an ingest worker, so it includes time spent waiting for a
CPU while the other workers, and anything else on the machine, run: on a shared 2-core machine the
same file reads 4.7 s alone and 5.3 s during a test suite. Hence two figures: a file over
:data:`MAX_FILE_SECONDS` is a violation (a hang or a pathological file, never noise), and the files
over :data:`SLOW_FILE_SECONDS` are listed in the report (``make fuzz``) for a person to look at, but
break nothing. A file that hangs outright is killed by the ingest's own per-task limit
(``--task-timeout``, 60 s by default) and quarantined as ``decoder_timeout``; the seconds recorded
for it are then at least that limit, so it also counts as over :data:`MAX_FILE_SECONDS`.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.fuzz.corpus import REPO, Seed, describe, load_corpus
from tests.fuzz.mutators import MUTATORS, Mutator, NotApplicable, reidentify

#: The limits the e2e test holds ingest to. MAX_FILE_SECONDS only catches hangs and pathological files:
#: per-file seconds are wall-clock on a possibly busy machine (module docstring), several times the
#: slowest file's ~5 s, and half the ingest's 60 s per-task limit (so a timed-out file is over it too).
MAX_PEAK_RSS_MIB = 2048
MAX_FILE_SECONDS = 30.0
#: Reported, not enforced: files slower than this are listed in the report as worth a look.
SLOW_FILE_SECONDS = 5.0
STATUSES = ("catalogued", "quarantined")


@dataclass(frozen=True)
class Generated:
    relpath: str  # relative to DIR/src, POSIX
    mutation: str
    seed: str
    index: int
    size: int


@dataclass
class CampaignResult:
    out: Path
    n_files: int
    seed: int
    exit_code: int | None  # None: the CLI ran past the campaign's time limit and was killed
    wall_s: float
    generate_s: float
    peak_rss_mib: float
    peak_processes: int
    slowest_file: str | None
    slowest_seconds: float
    outcome: list[dict[str, Any]]
    missing: list[str]  # generated files absent from the manifest
    both_states: list[str]  # files listed more than once, in both states, or catalogued and in quarantine.parquet
    bad_status: list[str]  # files whose manifest status is neither catalogued nor quarantined
    quarantined_without_reason: list[str]
    catalogued_without_scan: list[str]  # catalogued, but their scan_id is not in catalog.parquet
    over_time: list[tuple[str, float]]  # files over MAX_FILE_SECONDS (a violation), slowest first
    slow_files: list[tuple[str, float]]  # files over SLOW_FILE_SECONDS (reported only), slowest first
    n_catalogued: int
    n_quarantined: int
    n_scans: int
    reasons: dict[str, int]
    seeds: str
    stdout_tail: str
    stderr_tail: str
    report_path: Path | None = None
    generated: list[Generated] = field(default_factory=list, repr=False)

    @property
    def violations(self) -> list[str]:
        """What broke the promise (empty when every check held)."""
        out = []
        if self.exit_code != 0:
            out.append(f"exit code {self.exit_code}")
        for name in ("missing", "both_states", "bad_status", "quarantined_without_reason"):
            items = getattr(self, name)
            if items:
                out.append(f"{len(items)} file(s) {name.replace('_', ' ')}: {items[:5]}")
        if self.peak_rss_mib >= MAX_PEAK_RSS_MIB:
            out.append(f"peak RSS {self.peak_rss_mib:.0f} MiB >= {MAX_PEAK_RSS_MIB} MiB")
        if self.over_time:
            out.append(f"{len(self.over_time)} file(s) over {MAX_FILE_SECONDS:g} s: {self.over_time[:5]}")
        return out

    def outcome_markdown(self) -> str:
        lines = ["| class | files | catalogued | quarantined | not in manifest | top quarantine reasons |",
                 "| --- | ---: | ---: | ---: | ---: | --- |"]
        for row in self.outcome:
            reasons = ", ".join(f"{k} {v}" for k, v in row["top_reasons"]) or "-"
            lines.append(f"| {row['class']} | {row['files']} | {row['catalogued']} | {row['quarantined']} | "
                         f"{row['missing']} | {reasons} |")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------------

def _units(seeds: list[Seed], mutator: Mutator) -> list[list[Seed]]:
    """What a class draws from: single seeds, and whole series (a run of their slices is drawn later)."""
    singles = [[s] for s in seeds if s.kind in mutator.kinds and s.series is None]
    series: dict[str, list[Seed]] = {}
    for s in seeds:
        if s.kind in mutator.kinds and s.series is not None:
            series.setdefault(s.series, []).append(s)
    return singles + list(series.values())


#: Share of units that get a second mutant of one of their instances (same SOP Instance UID).
DUPLICATE_SHARE = 0.1


def generate(n: int, seed: int, src: Path, seeds: list[Seed] | None = None) -> list[Generated]:
    """Write ``n`` mutated files under ``src``, spread evenly over the mutation classes (deterministic)."""
    seeds = load_corpus() if seeds is None else seeds
    mutators = list(MUTATORS.values())
    counts = [n // len(mutators) + (k < n % len(mutators)) for k in range(len(mutators))]
    width = max(5, len(str(n)))
    made: list[Generated] = []
    index = 0
    for mutator, count in zip(mutators, counts):
        units = _units(seeds, mutator)
        if not units or not count:
            continue
        folder = src / mutator.name
        folder.mkdir(parents=True, exist_ok=True)
        rng = random.Random(f"scanlens-fuzz|{seed}|{mutator.name}")
        done = unit_no = failures = 0
        while done < count:
            unit = rng.choice(units)
            if len(unit) > 1:  # a run of consecutive slices of one series
                k = rng.randint(2, min(6, len(unit)))
                start = rng.randint(0, len(unit) - k)
                unit = unit[start:start + k]
            unit_no += 1
            key = f"{seed}|{mutator.name}|{unit_no}"
            plan = [(member, f"{key}|{k}|instance") for k, member in enumerate(unit)]
            if rng.random() < DUPLICATE_SHARE:  # a second, differently mutated copy of one instance
                plan.append(rng.choice(plan))
            for member, instance_key in plan[:count - done]:
                file_rng = random.Random(f"scanlens-fuzz|{seed}|{index}|{failures}")
                data = reidentify(member.data, f"{key}|study", f"{key}|series", instance_key)
                try:
                    mutated = mutator.mutate(data, file_rng)
                except NotApplicable:
                    failures += 1
                    if failures > 50 * count + 1000:
                        raise RuntimeError(f"{mutator.name}: no seed takes this mutation") from None
                    continue
                relpath = f"{mutator.name}/{index:0{width}d}_{member.name}"
                (src / relpath).write_bytes(mutated)
                made.append(Generated(relpath, mutator.name, member.name, index, len(mutated)))
                index += 1
                done += 1
    return made


# --------------------------------------------------------------------------------------------------
# Running the CLI under a memory sampler
# --------------------------------------------------------------------------------------------------

class TreeMemorySampler(threading.Thread):
    """Samples the summed RSS of a process and all its descendants every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_bytes = 0
        self.peak_processes = 0
        self.samples = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop_event.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            total = 0
            for proc in procs:
                try:
                    total += proc.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    pass
            self.samples += 1
            if total > self.peak_bytes:
                self.peak_bytes, self.peak_processes = total, len(procs)
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


def _kill_tree(pid: int) -> None:
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass


def run_ingest(out: Path, workers: int | None, timeout_s: float) -> tuple[int | None, float, TreeMemorySampler, str, str]:
    """Run the CLI once on ``out/src``; (exit code or None on timeout, wall seconds, sampler, stdout, stderr)."""
    command = [sys.executable, "-m", "pipeline", "--debug", "ingest", str(out / "src"), "--workdir", str(out / "w"),
               "--timings", str(out / "timings.csv")]
    if workers:
        command += ["--workers", str(workers)]
    env = {**os.environ, "SCANLENS_SECRET": os.environ.get("SCANLENS_SECRET") or "scanlens-fuzz-secret"}
    with open(out / "ingest.stdout", "w") as stdout, open(out / "ingest.stderr", "w") as stderr:
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=stdout, stderr=stderr)
        sampler = TreeMemorySampler(process.pid)
        sampler.start()
        try:
            code: int | None = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_tree(process.pid)
            process.wait()
            code = None
        wall = time.perf_counter() - start
        sampler.stop()
    return code, wall, sampler, (out / "ingest.stdout").read_text()[-4000:], (out / "ingest.stderr").read_text()[-8000:]


# --------------------------------------------------------------------------------------------------
# Checking and reporting
# --------------------------------------------------------------------------------------------------

def _read_table(path: Path, columns: list[str]) -> Any:
    import pandas as pd

    return pd.read_parquet(path) if path.exists() else pd.DataFrame(columns=columns)


def analyse(out: Path, generated: list[Generated]) -> dict[str, Any]:
    """Check the work folder's tables against the generated files."""
    import pandas as pd

    w = out / "w"
    manifest = _read_table(w / "ingest_manifest.parquet", ["source_path", "status", "scan_id"])
    quarantine = _read_table(w / "quarantine.parquet", ["source_path", "reason", "detail"])
    catalog = _read_table(w / "catalog.parquet", ["scan_id"])
    timings_path = out / "timings.csv"
    timings = pd.read_csv(timings_path) if timings_path.exists() else pd.DataFrame(columns=["source_path", "stage", "seconds"])
    per_file = timings.groupby("source_path")["seconds"].sum() if len(timings) else pd.Series(dtype=float)

    statuses: dict[str, list[str]] = {}
    for path, status in zip(manifest["source_path"], manifest["status"]):
        statuses.setdefault(path, []).append(status)
    reasons_of: dict[str, list[str]] = {}
    for path, reason in zip(quarantine["source_path"], quarantine["reason"]):
        reasons_of.setdefault(path, []).append("" if reason is None or pd.isna(reason) else str(reason))
    scan_of = dict(zip(manifest["source_path"], manifest["scan_id"]))
    catalogued_scans = set(catalog["scan_id"])

    missing, both, bad, no_reason, no_scan = [], [], [], [], []
    for g in generated:
        found = statuses.get(g.relpath)
        if not found:
            missing.append(g.relpath)
            continue
        if len(found) > 1 or (found[0] == "catalogued" and g.relpath in reasons_of):
            both.append(g.relpath)
        if any(s not in STATUSES for s in found):
            bad.append(g.relpath)
        if "quarantined" in found and not any(r.strip() for r in reasons_of.get(g.relpath, [])):
            no_reason.append(g.relpath)
        if found == ["catalogued"] and scan_of.get(g.relpath) not in catalogued_scans:
            no_scan.append(g.relpath)

    outcome = []
    by_class: dict[str, list[Generated]] = {}
    for g in generated:
        by_class.setdefault(g.mutation, []).append(g)
    for name in [*MUTATORS, "all"]:
        files = generated if name == "all" else by_class.get(name, [])
        if not files:
            continue
        status = Counter(statuses.get(g.relpath, ["missing"])[0] for g in files)
        reasons = Counter(r for g in files if statuses.get(g.relpath, [""])[0] == "quarantined" for r in reasons_of.get(g.relpath, [""])[:1])
        outcome.append({"class": name, "files": len(files), "catalogued": status["catalogued"],
                        "quarantined": status["quarantined"], "missing": status["missing"],
                        "top_reasons": reasons.most_common(4 if name != "all" else 12)})
    slowest = per_file.idxmax() if len(per_file) else None
    generated_paths = {g.relpath for g in generated}
    slow = sorted(((p, float(s)) for p, s in per_file.items() if s > SLOW_FILE_SECONDS and p in generated_paths),
                  key=lambda item: -item[1])
    over = [(p, s) for p, s in slow if s > MAX_FILE_SECONDS]
    return {
        "missing": missing, "both_states": both, "bad_status": bad, "quarantined_without_reason": no_reason,
        "catalogued_without_scan": no_scan, "outcome": outcome,
        "slowest_file": None if slowest is None else str(slowest),
        "slowest_seconds": 0.0 if slowest is None else float(per_file.max()),
        "over_time": over,
        "slow_files": slow,
        "n_catalogued": sum(1 for g in generated if statuses.get(g.relpath) == ["catalogued"]),
        "n_quarantined": sum(1 for g in generated if statuses.get(g.relpath) == ["quarantined"]),
        "n_scans": len(catalog),
        "reasons": dict(Counter(r for g in generated for r in reasons_of.get(g.relpath, [])[:1]).most_common()),
    }


def write_report(result: CampaignResult, path: Path) -> None:
    verdict = "all checks held" if not result.violations else "VIOLATIONS:\n" + "\n".join(f"- {v}" for v in result.violations)
    slowest_class = result.slowest_file.split("/", 1)[0] if result.slowest_file else "-"
    lines = [
        f"# ScanLens ingest fuzzing campaign (seed {result.seed}, {result.n_files} files)",
        "",
        f"- exit code: {result.exit_code if result.exit_code is not None else 'killed (campaign time limit)'}",
        f"- ingest wall time: {result.wall_s:.1f} s (generation: {result.generate_s:.1f} s)",
        f"- peak RSS of the ingest process tree: {result.peak_rss_mib:.0f} MiB ({result.peak_processes} processes)",
        f"- slowest file: `{result.slowest_file}` ({result.slowest_seconds:.2f} s, class {slowest_class})",
        f"- catalogued: {result.n_catalogued}, quarantined: {result.n_quarantined}, scans in the catalogue: {result.n_scans}",
        f"- files missing from the manifest: {len(result.missing)} {result.missing[:20]}",
        f"- files in both states: {len(result.both_states)} {result.both_states[:20]}",
        (f"- files with another status: {len(result.bad_status)}; quarantined without a reason: "
         f"{len(result.quarantined_without_reason)}; catalogued without a catalogue row: {len(result.catalogued_without_scan)}"),
        f"- files over {MAX_FILE_SECONDS:g} s (a hang or a pathological file: a violation): "
        f"{len(result.over_time)} {result.over_time[:10]}",
        f"- files over {SLOW_FILE_SECONDS:g} s (wall-clock, reported only): {len(result.slow_files)} {result.slow_files[:10]}",
        "",
        "## Outcome by mutation class",
        "",
        result.outcome_markdown(),
        "",
        "## Verdict",
        "",
        verdict,
        "",
        "## Seeds",
        "",
        "```",
        result.seeds.strip(),
        "```",
    ]
    if result.exit_code != 0:
        lines += ["", "## CLI stderr (tail)", "", "```", result.stderr_tail.strip(), "```"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    payload = {k: v for k, v in asdict(result).items() if k not in ("generated",)}
    payload["out"], payload["report_path"] = str(result.out), str(path)
    payload["violations"] = result.violations
    path.with_suffix(".json").write_text(json.dumps(payload, indent=2, default=str) + "\n")


def run_campaign(n: int, seed: int, out: Path, report: Path | None = None, workers: int | None = None,
                 timeout_s: float = 3600.0, include_shared: bool = True) -> CampaignResult:
    """Generate, ingest, check and report (see the module docstring). ``out``'s ``src``, ``w`` and the
    campaign's own files are replaced; nothing else in ``out`` is touched."""
    out = Path(out).resolve()
    for stale in ("src", "w"):
        shutil.rmtree(out / stale, ignore_errors=True)
    for name in ("timings.csv", "generated.csv", "ingest.stdout", "ingest.stderr"):
        (out / name).unlink(missing_ok=True)
    (out / "src").mkdir(parents=True)
    seeds = load_corpus(include_shared=include_shared)
    start = time.perf_counter()
    nibabel_log = logging.getLogger("nibabel")
    level = nibabel_log.level
    nibabel_log.setLevel(logging.ERROR)  # the mutants' headers make nibabel chatty
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            generated = generate(n, seed, out / "src", seeds)
    finally:
        nibabel_log.setLevel(level)
    generate_s = time.perf_counter() - start
    with open(out / "generated.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["source_path", "class", "seed", "index", "size"])
        writer.writerows((g.relpath, g.mutation, g.seed, g.index, g.size) for g in generated)
    code, wall, sampler, stdout, stderr = run_ingest(out, workers, timeout_s)
    facts = analyse(out, generated)
    result = CampaignResult(
        out=out, n_files=len(generated), seed=seed, exit_code=code, wall_s=wall, generate_s=generate_s,
        peak_rss_mib=sampler.peak_bytes / 2**20, peak_processes=sampler.peak_processes,
        seeds=describe(seeds), stdout_tail=stdout, stderr_tail=stderr, generated=generated, **facts,
    )
    result.report_path = report or out / "report.md"
    write_report(result, result.report_path)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.campaign", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, required=True, help="number of mutated files")
    parser.add_argument("--seed", type=int, default=1, help="campaign seed (same seed, same files)")
    parser.add_argument("--out", type=Path, required=True, help="campaign folder (src/, w/ and reports inside)")
    parser.add_argument("--report", type=Path, default=None, help="markdown report (default OUT/report.md; JSON next to it)")
    parser.add_argument("--workers", type=int, default=None, help="passed to scanlens ingest --workers")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds before the ingest is killed")
    parser.add_argument("--no-shared", action="store_true", help="ignore ../shared/data/dicom seeds")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")
    result = run_campaign(args.n, args.seed, args.out, args.report, args.workers, args.timeout, not args.no_shared)
    print(result.outcome_markdown())
    print(f"exit code {result.exit_code}, ingest {result.wall_s:.1f} s, peak RSS {result.peak_rss_mib:.0f} MiB, "
          f"slowest file {result.slowest_file} {result.slowest_seconds:.2f} s, "
          f"{len(result.slow_files)} file(s) over {SLOW_FILE_SECONDS:g} s")
    for violation in result.violations:
        print(f"VIOLATION: {violation}")
    print(f"report: {result.report_path}")
    return 0 if not result.violations else 1


if __name__ == "__main__":
    sys.exit(main())
