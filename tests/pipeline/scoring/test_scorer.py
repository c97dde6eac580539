"""The warm scorer: the same scores as a cold score_study, its workers kept, a newly promoted champion loaded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pipeline.layout import Workdir
from pipeline.registry import Registry
from pipeline.scoring import read_scores, warm_scorer
from pipeline.scoring.study import score_study
from tests.conftest import make_inbox


def test_the_warm_scorer_scores_as_a_cold_call_and_follows_a_new_champion(
    champion_workdir: Path, tmp_path: Path
) -> None:
    workdir, cold = tmp_path / "w", tmp_path / "cold"
    shutil.copytree(champion_workdir, workdir)
    shutil.copytree(champion_workdir, cold)
    studies = sorted(make_inbox(tmp_path, per_split=1).iterdir())[:2]
    scorer = warm_scorer(workdir, "cpu")
    try:
        assert warm_scorer(workdir, "cpu") is scorer  # one per work folder and device in a process
        first = scorer.champion
        done = [scorer.score_study(s, f"inbox_{i}", overlays=False) for i, s in enumerate(studies[:1])]
        workers = scorer.pool.pool()
        done += [scorer.score_study(studies[1], "inbox_1", overlays=False)]
        assert scorer.pool.pool() is workers and scorer.champion is first  # kept between studies
        expected = [score_study(cold, s, f"inbox_{i}", overlays=False) for i, s in enumerate(studies)]
        for warm, plain in zip(done, expected, strict=True):  # the same rows, to the bit
            assert warm.scores.to_dict("records") == plain.scores.to_dict("records") and len(warm.scores) == 1
        assert read_scores(workdir).equals(read_scores(cold))

        again = scorer.score_study(studies[0], "inbox_0", overlays=False)
        assert again.scores.empty and again.n_skipped == 1

        # a new champion is promoted: the next study is scored by it, without a new scorer
        second = "v-second000000"
        files = Workdir(workdir)
        shutil.copytree(files.version(first.version).root, files.version(second).root)
        record = json.loads(files.version(second).record.read_text())
        files.version(second).record.write_text(json.dumps({**record, "version": second}))
        Registry(workdir).promote(second, "test promotion")
        rescored = scorer.score_study(studies[0], "inbox_0", overlays=False)
        assert scorer.champion.version == second and scorer.champion is not first
        assert len(rescored.scores) == 1 and rescored.model_version == second
        table = read_scores(workdir)
        assert sorted(table["model_version"]) == sorted([first.version] * 2 + [second])
    finally:
        scorer.close()
