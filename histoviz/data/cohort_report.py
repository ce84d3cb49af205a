"""The import report of ``histoviz import``: ``import_report.json`` and a readable ``.md``.

Counts of slides, patients and samples matched, unmatched and dropped, each with its reason;
what every clinical and omics file was read as (format, orientation, rules applied); the
features; the configs written and why others were not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["summary_lines", "write_report"]


def _j(x: Any) -> Any:
    import numpy as np

    if isinstance(x, dict):
        return {str(k): _j(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set)):
        return [_j(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    return x


def write_report(root: Path, report: dict[str, Any]) -> None:
    """Write ``import_report.json`` and ``import_report.md`` into ``root``."""
    (root / "import_report.json").write_text(json.dumps(_j(report), indent=1, default=str))
    (root / "import_report.md").write_text(markdown(report))


def _drops(d: dict[str, Any]) -> list[str]:
    return [f"| {why} | {v['n']} | {', '.join(v['e.g.'])} |" for why, v in d.items()]


def markdown(r: dict[str, Any]) -> str:
    """The report as Markdown."""
    s, p, c = r["slides"], r["patients"], r["clinical"]
    lines = [f"# Import report: {Path(r['out']).name}", "",
             f"histoviz {r['histoviz_version']}; inputs and options at the end.", "", "## Slides", "",
             f"- found: {s['found']}; kept: {s['kept']}; dropped: {s['n_dropped']}",
             f"- patient ids from: {', '.join(f'{k} {v}' for k, v in s.get('by_id_source', {}).items())}",
             f"- kept without a clinical row: {len(s['without_clinical_row'])}"
             + (f" ({', '.join(s['without_clinical_row'][:10])})" if s["without_clinical_row"] else "")]
    if s.get("no_mpp"):
        lines.append(f"- no recorded resolution (embedding needs --mpp-override / data.embed.mpp_override): "
                     f"{', '.join(s['no_mpp'][:10])}")
    if s["dropped"]:
        lines += ["", "| dropped because | slides | e.g. |", "|---|---|---|", *_drops(s["dropped"])]
    if s.get("unreadable"):
        lines += ["", "Unreadable slides:", *[f"- {k}: {v}" for k, v in s["unreadable"].items()]]
    lines += ["", "## Patients", "",
              f"- with kept slides: {p['n']} ({p['with_several_slides']} with several slides)",
              f"- with a clinical row: {p['with_clinical_row']}; clinical rows without a kept slide: "
              f"{p['clinical_without_slides']}",
              f"- with survival: {p['with_survival']} ({p['events']} events); with a grade: {p['with_grade']}", ""]
    lines += ["## Clinical tables", ""]
    for f in c.get("files", []):
        surv = "; ".join(f"{k}: {' / '.join(map(str, v))}" for k, v in (f.get("survival") or {}).items())
        lines.append(f"- `{f['file']}`: {f['format']}, {f['rows']} rows, {f['patients']} patients, patient column "
                     f"`{f['patient_column']}`" + (f"; survival {surv}" if surv else "")
                     + (f"; grade `{f['grade']}`" if f.get("grade") else ""))
    g = c.get("grades", {})
    lines += ["", f"Times are in {c.get('time_unit', 'months')} (days / 30.4375, years x 12). Grade rule: "
              f"{g.get('rule', '')}. Declared classes {g.get('classes')}, present {g.get('classes_present')}; "
              f"not assessed (GX): {g.get('not_assessed', 0)}; missing: {g.get('missing', 0)}; unknown (left "
              f"empty, not guessed): " + (", ".join(f"{k!r} x{v}" for k, v in g.get("unknown", {}).items())
                                          or "none"), ""]
    lines += ["## Omics", ""]
    for m, o in r.get("omics", {}).items():
        lines.append(f"### {m}: `{o['file']}`")
        lines.append("")
        lines.append(f"- read as {o['layout']}, {o['orientation']}; targets named by {o.get('target_column')}; "
                     f"{o['targets']} targets, {o['patients_matched']} patients of {o['samples_in_table']} samples")
        lines.append(f"- duplicate target names collapsed ({o['duplicate_rule']}): {o['duplicate_targets_collapsed']}; "
                     f"rows without a name dropped: {o.get('rows_without_name', 0)}; missing values: "
                     f"{o['missing_values']}")
        lines.append(f"- value scale: {o['scale']} (detected {o.get('scale_detected', o['scale'])})")
        if o.get("samples_dropped"):
            lines += ["", "| samples dropped because | n | e.g. |", "|---|---|---|", *_drops(o["samples_dropped"])]
        if o.get("sample_choices"):
            lines += ["", "Patients with several samples: " + "; ".join(o["sample_choices"][:10])]
        lines.append("")
    f = r.get("features", {})
    lines += ["## Features", "", f"- encoder `{f.get('encoder')}`, made {f.get('made')}"]
    if "linked" in f:
        lines.append(f"- {f['linked']} bags linked from `{f['folder']}` ({f['embed_dim']}-d); slides without a bag: "
                     f"{len(f['without_bag'])}; files of other slides: {f['unused_files']}; tile resolution from: "
                     + ", ".join(f"{k} ({v})" for k, v in f.get("mpp_source", {}).items()))
    cf = r.get("configs", {})
    lines += ["", "## Configs", ""]
    lines += [f"- `{v}`: `histoviz train {v} --out runs/{k}`" for k, v in cf.get("written", {}).items()]
    lines += [f"- {k}: not written ({why})" for k, why in cf.get("not_written", {}).items()]
    lines += ["", "## Inputs", "", "```json", json.dumps(_j({"inputs": r.get("inputs"), "options": r.get("options")}),
                                                         indent=1, default=str), "```", ""]
    return "\n".join(lines)


def summary_lines(r: dict[str, Any], out: Path, *, unchanged: bool = False) -> list[str]:
    """What ``histoviz import`` prints."""
    s, p = r["slides"], r["patients"]
    if unchanged:
        return [f"{out}: up to date (same inputs and options); nothing written"]
    lines = [f"slides: {s['found']} found, {s['kept']} kept, {s['n_dropped']} dropped"
             + (" (" + "; ".join(f"{k}: {v['n']}" for k, v in s["dropped"].items()) + ")" if s["dropped"] else ""),
             f"patients: {p['n']} ({p['with_clinical_row']} with a clinical row, {p['with_survival']} with survival, "
             f"{p['events']} events, {p['with_grade']} with a grade); slides without a clinical row: "
             f"{len(s['without_clinical_row'])}"]
    for m, o in r.get("omics", {}).items():
        lines.append(f"omics {m}: {o['patients_matched']} patients x {o['targets']} targets ({o['orientation']}, "
                     f"scale {o['scale']}, {o['duplicate_targets_collapsed']} duplicate names collapsed)")
    unknown = r["clinical"].get("grades", {}).get("unknown", {})
    if unknown:
        lines.append(f"grade values not understood (left empty): {unknown}; map them with --grade-map 'VALUE=CLASS'")
    for k, v in r.get("configs", {}).get("written", {}).items():
        lines.append(f"config {k}: {out / v}")
    lines.append(f"report: {out / 'import_report.md'}")
    return lines
