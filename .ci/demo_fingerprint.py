"""Fingerprint what the demo data makes of one checkout, to show a refactor changed no output.

    python .ci/demo_fingerprint.py REPO OUT.json [--work DIR]       # run and hash
    python .ci/demo_fingerprint.py --compare A.json B.json           # what differs

The run: the demo source (both bundled archives, as the ``demo_studies`` asset makes them; built once
in ``DIR/source`` and reused, so every checkout reads the same files with the same mtimes), then
``scanlens ingest``, a ``--deterministic`` 2D ``train`` and a ``--deterministic`` 3D 2-fold ``evaluate``
with REPO's own code (``PYTHONPATH=REPO``) and a fixed secret. Every file in the work folder outside
``.scanlens/`` is hashed. ``checkpoint.pt`` and ``history.json`` differ on every run (wall times);
``model_card.json`` records the git commit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path


def _run(repo: Path, env: dict[str, str], *args: str) -> None:
    print("+ scanlens", *args, flush=True)
    subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=repo, env=env, check=True)


def fingerprint(repo: Path, out: Path, work: Path) -> None:
    env = dict(os.environ, SCANLENS_SECRET="fingerprint-secret", PYTHONPATH=str(repo))
    source, labels, w = work / "source", work / "labels.csv", work / "w"
    if not labels.exists():
        subprocess.run([sys.executable, "-c", (
            "from pathlib import Path; from pipeline.demo import DemoArchive, prepare_demo_source; "
            f"d = Path({str(repo / 'data' / 'demo')!r}); "
            "prepare_demo_source([DemoArchive(d / 'breastmnist.npz', None), DemoArchive(d / 'adrenalmnist3d.npz', 40)], "
            f"Path({str(source)!r}), Path({str(labels)!r}), seed=0)")], cwd=repo, env=env, check=True)
    shutil.rmtree(w, ignore_errors=True)
    _run(repo, env, "ingest", str(source), "--labels", str(labels), "--workdir", str(w))
    _run(repo, env, "train", "--workdir", str(w), "--dims", "2d", "--input-size", "32", "--epochs", "2",
         "--batch-size", "16", "--deterministic")
    _run(repo, env, "evaluate", "--workdir", str(w), "--dims", "3d", "--input-size", "16", "--folds", "2",
         "--epochs", "1", "--batch-size", "8", "--resamples", "200", "--deterministic")
    digests = {str(p.relative_to(w)): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in sorted(w.rglob("*")) if p.is_file() and ".scanlens" not in p.parts}
    out.write_text(json.dumps(digests, indent=1))
    print(f"{len(digests)} files hashed into {out}")


def compare(a_path: Path, b_path: Path) -> int:
    a, b = json.loads(a_path.read_text()), json.loads(b_path.read_text())
    differ = sorted(k for k in set(a) & set(b) if a[k] != b[k])
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    print(f"{len(a)} vs {len(b)} files; identical {len(set(a) & set(b)) - len(differ)}; differ {len(differ)}; "
          f"only in the first {len(only_a)}; only in the second {len(only_b)}")
    for key in differ:
        print("  differs:", key)
    for key in only_a + only_b:
        print("  only in one:", key)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs=2, type=Path, metavar="PATH", help="REPO OUT.json, or A.json B.json with --compare")
    parser.add_argument("--compare", action="store_true", help="compare two fingerprints")
    parser.add_argument("--work", type=Path, default=Path("/tmp/scanlens_fingerprint"), help="scratch folder")
    args = parser.parse_args()
    if args.compare:
        return compare(*args.paths)
    fingerprint(args.paths[0].resolve(), args.paths[1].resolve(), args.work.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
