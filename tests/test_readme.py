"""The README's numbers are generated from committed results (``docs/gen_readme.py``)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gen():
    spec = importlib.util.spec_from_file_location("gen_readme", ROOT / "docs" / "gen_readme.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_blocks_equal_what_the_committed_results_render(gen):
    stale = gen.check(ROOT / "README.md")
    assert not stale, ("README.md disagrees with docs/results (python docs/gen_readme.py rewrites it):\n"
                       + "\n".join(stale))


def test_every_committed_results_file_has_a_renderer(gen):
    for f in sorted((ROOT / "docs" / "results").glob("*.json")):
        assert (ROOT / "docs" / "renderers" / f"{f.stem}.py").is_file(), f
        json.loads(f.read_text())


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "results").mkdir()
    (tmp_path / "renderers").mkdir()
    (tmp_path / "results" / "toy.json").write_text(json.dumps({"rows": [["a", 0.1234, 0.01], ["b", 0.5, None]]}))
    (tmp_path / "renderers" / "toy.py").write_text(
        "from gen_readme import md_table, pm\n"
        "def render(d):\n    return md_table(['model', 'r'], [(m, pm(v, s)) for m, v, s in d['rows']])\n"
        "def render_count(d):\n    return f\"{len(d['rows'])} models\"\n")
    return tmp_path


def _readme(body_a: str = "stale", body_b: str = "") -> str:
    return ("# T\nintro 1.0\n<!-- generated:toy -->\n" + body_a + "\n<!-- /generated:toy -->\n"
            "middle\n<!-- generated:toy.count -->\n" + body_b + "<!-- /generated:toy.count -->\nend\n")


def test_generate_fills_each_block_and_nothing_else(gen, tree):
    out = gen.generate(_readme(), results=tree / "results", renderers=tree / "renderers")
    assert out == ("# T\nintro 1.0\n<!-- generated:toy -->\n| model | r |\n|---|---|\n| a | 0.123 ± 0.010 |\n"
                   "| b | 0.500 |\n<!-- /generated:toy -->\nmiddle\n<!-- generated:toy.count -->\n2 models\n"
                   "<!-- /generated:toy.count -->\nend\n")
    assert gen.generate(out, results=tree / "results", renderers=tree / "renderers") == out


def test_check_names_the_block_whose_number_was_retyped(gen, tree):
    readme = tree / "README.md"
    readme.write_text(gen.generate(_readme(), results=tree / "results", renderers=tree / "renderers"))
    assert gen.check(readme, results=tree / "results", renderers=tree / "renderers") == []
    readme.write_text(readme.read_text().replace("0.123 ± 0.010", "0.130 ± 0.010"))
    stale = gen.check(readme, results=tree / "results", renderers=tree / "renderers")
    assert len(stale) == 1 and "[toy]" in stale[0] and "-| a | 0.130" in stale[0] and "+| a | 0.123" in stale[0]


@pytest.mark.parametrize(("text", "message"), [
    ("<!-- generated:toy -->\nx\n", "never closed"),
    ("x\n<!-- /generated:toy -->\n", "without its opening marker"),
    ("<!-- generated:toy -->\n<!-- generated:toy.count -->\n", "opens inside block"),
    ("<!-- generated:nothing -->\n<!-- /generated:nothing -->\n", "nothing.json: results file not found"),
    ("<!-- generated:toy.absent -->\n<!-- /generated:toy.absent -->\n", "no function render_absent"),
])
def test_broken_blocks_are_named(gen, tree, text, message):
    with pytest.raises(gen.GenerateError, match=message):
        gen.generate(text, results=tree / "results", renderers=tree / "renderers")


def test_a_renderer_reading_a_missing_field_names_the_results_file(gen, tree):
    (tree / "results" / "toy.json").write_text("{}")
    with pytest.raises(gen.GenerateError, match=r"toy\.json lacks what render reads"):
        gen.generate(_readme(), results=tree / "results", renderers=tree / "renderers")


def test_take_copies_a_run_results_file_and_the_cli_checks(gen, tree):
    src = tree / "run.json"
    src.write_text(json.dumps({"rows": [["c", 0.2, 0.1]]}))
    dst = gen.take("toy", src, results=tree / "results")
    assert json.loads(dst.read_text()) == {"rows": [["c", 0.2, 0.1]]}
    src.write_text("{not json")
    with pytest.raises(gen.GenerateError, match="run.json: not readable JSON"):
        gen.take("toy", src, results=tree / "results")
    r = subprocess.run([sys.executable, str(ROOT / "docs" / "gen_readme.py"), "--check"], cwd=ROOT,
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
