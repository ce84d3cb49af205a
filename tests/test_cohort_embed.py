"""Cohort embedding: corrupt slides are skipped and reported, interrupted runs resume."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from histoviz.data.cohort import read_cohort
from histoviz.errors import DataError
from histoviz.features.cohort import embed_cohort
from histoviz.io import FeatureBag
from tests.conftest import make_layout_image, write_pyramid_tiff


@pytest.fixture
def cohort_csv(tmp_path):
    d = tmp_path / "slides"
    d.mkdir()
    rows = []
    for i in range(3):
        img, _ = make_layout_image(1344, 1120, seed=i)
        write_pyramid_tiff(d / f"s{i}.tif", img)
        rows.append((f"s{i}", f"p{i // 2}", f"slides/s{i}.tif"))
    bad = d / "broken.svs"
    bad.write_bytes(b"II*\x00" + np.random.default_rng(0).bytes(3000))
    rows.append(("broken", "p9", "slides/broken.svs"))
    rows.append(("gone", "p8", "slides/gone.tif"))
    p = tmp_path / "cohort.csv"
    pd.DataFrame(rows, columns=["slide_id", "patient_id", "path"]).to_csv(p, index=False)
    return p


def test_read_cohort_validates(tmp_path, cohort_csv):
    df = read_cohort(cohort_csv)
    assert list(df["slide_id"]) == ["s0", "s1", "s2", "broken", "gone"]
    assert df["path"][0].endswith("slides/s0.tif") and df["path"][0].startswith(str(tmp_path))
    bad = tmp_path / "bad.csv"
    bad.write_text("slide_id,path\na,x.tif\na,y.tif\n")
    with pytest.raises(DataError, match="bad.csv: duplicate slide_id"):
        read_cohort(bad)
    bad.write_text("foo,bar\n1,2\n")
    with pytest.raises(DataError, match="lacks column"):
        read_cohort(bad)


def test_corrupt_and_missing_are_reported_rest_finishes(cohort_csv, tmp_path):
    out = tmp_path / "feats"
    res = embed_cohort(read_cohort(cohort_csv), out, encoder="morphology", workers=0, progress=False)
    st = {s.slide_id: s for s in res.slides}
    assert [st[f"s{i}"].status for i in range(3)] == ["done"] * 3
    assert st["broken"].status == "failed" and "broken.svs" in st["broken"].error
    assert st["gone"].status == "failed" and "gone.tif: slide file not found" in st["gone"].error
    assert res.counts() == {"done": 3, "skipped": 0, "failed": 2}
    assert sorted(p.name for p in out.glob("*.h5")) == ["s0.h5", "s1.h5", "s2.h5"]
    assert len(FeatureBag.from_h5(out / "s1.h5")) == 16
    summary = pd.read_csv(out / "embed_summary.csv")
    assert set(summary["status"]) == {"done", "failed"}
    assert "FAILED broken" in res.summary()


def test_interrupted_run_resumes_without_recomputing(cohort_csv, tmp_path, monkeypatch):
    import histoviz.features.embed as emb

    out = tmp_path / "feats"
    cohort = read_cohort(cohort_csv).iloc[:3]
    real = emb.embed_slide
    calls = []

    def flaky(reader, *a, **k):
        calls.append(reader.slide_id)
        if reader.slide_id == "s1":
            raise KeyboardInterrupt  # the user pressed Ctrl-C in the middle of slide s1
        return real(reader, *a, **k)

    monkeypatch.setattr(emb, "embed_slide", flaky)
    with pytest.raises(KeyboardInterrupt):
        embed_cohort(cohort, out, encoder="morphology", workers=0, progress=False)
    assert sorted(p.name for p in out.glob("*.h5")) == ["s0.h5"]
    assert not list(out.glob("*.tmp"))
    done_mtime = (out / "s0.h5").stat().st_mtime_ns
    before = FeatureBag.from_h5(out / "s0.h5").features.copy()

    monkeypatch.setattr(emb, "embed_slide", real)
    calls.clear()
    res = embed_cohort(cohort, out, encoder="morphology", workers=0, progress=False)
    assert res.counts() == {"done": 2, "skipped": 1, "failed": 0}
    assert (out / "s0.h5").stat().st_mtime_ns == done_mtime
    assert np.array_equal(FeatureBag.from_h5(out / "s0.h5").features, before)
    # a different encoder does not count as done
    res = embed_cohort(cohort, out / "tiny", encoder="tiny-test", workers=0, progress=False)
    assert res.counts()["done"] == 3


def test_stale_tmp_files_are_cleaned(cohort_csv, tmp_path):
    out = tmp_path / "feats"
    out.mkdir()
    (out / ".s0.abc.h5.tmp").write_bytes(b"half")
    embed_cohort(read_cohort(cohort_csv).iloc[:1], out, encoder="morphology", workers=0, progress=False)
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


@pytest.mark.slow
def test_dask_local_cluster_matches_in_process(cohort_csv, tmp_path):
    cohort = read_cohort(cohort_csv)
    a = embed_cohort(cohort, tmp_path / "a", encoder="morphology", workers=0, progress=False)
    b = embed_cohort(cohort, tmp_path / "b", encoder="morphology", workers=2, progress=False)
    assert a.counts() == b.counts() == {"done": 3, "skipped": 0, "failed": 2}
    for i in range(3):
        fa = FeatureBag.from_h5(tmp_path / "a" / f"s{i}.h5")
        fb = FeatureBag.from_h5(tmp_path / "b" / f"s{i}.h5")
        assert np.array_equal(fa.coords, fb.coords)
        assert np.allclose(fa.features, fb.features, atol=1e-5)


def test_cli_embed_cohort_exit_codes(cohort_csv, tmp_path, capsys):
    from histoviz.cli import main

    rc = main(["embed", str(cohort_csv), "--out", str(tmp_path / "o"), "--encoder", "morphology",
               "--workers", "0", "--no-progress"])
    assert rc == 3  # some slides failed, the rest finished
    out = capsys.readouterr().out
    assert "3 embedded" in out and "2 failed" in out
    rc = main(["embed", str(cohort_csv), "--out", str(tmp_path / "o"), "--encoder", "nope"])
    assert rc == 1 and "unknown encoder 'nope'" in capsys.readouterr().err
