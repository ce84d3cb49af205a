"""TCGA barcodes: patient, sample, sample type and slide type from a slide or sample id.

A TCGA barcode names everything down to the slide or the aliquot
(https://docs.gdc.cancer.gov/Encyclopedia/pages/TCGA_Barcode/)::

    TCGA-A1-A0SB-01Z-00-DX1          a diagnostic slide (the GDC file name adds .<UUID>.svs)
    TCGA-A1-A0SB-01A-11R-A144-07     an RNA aliquot
    TCGA-A1-A0SB-01                  a sample (Xena, cBioPortal: 15 characters)
    TCGA-A1-A0SB                     the patient (participant): always the first 12 characters

- **sample type** (2 digits after the patient): ``01`` primary solid tumour, ``02`` recurrent,
  ``03`` primary blood cancer, ``05`` additional primary, ``06`` metastasis, ``07`` additional
  metastasis; ``10`` blood normal, ``11`` solid tissue normal; ``20``-``29`` controls;
- **slide type** (the last field of a slide barcode): ``DX`` a diagnostic (FFPE) slide;
  ``TS`` / ``BS`` / ``MS`` top, bottom and middle sections of the frozen sample.

Usage::

    >>> b = parse_barcode("TCGA-A1-A0SB-01Z-00-DX1.B34C267B-CAAA-4AB6-AD5C-276C26F997A1")
    >>> b.patient, b.sample, b.sample_type, b.tissue, b.slide_kind
    ('TCGA-A1-A0SB', 'TCGA-A1-A0SB-01', '01', 'tumour', 'diagnostic')
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from histoviz.errors import ConfigError

__all__ = [
    "SAMPLE_TYPES",
    "SLIDE_KINDS",
    "Barcode",
    "parse_barcode",
    "parse_sample_types",
    "parse_slide_types",
]

#: TCGA sample type codes (GDC code tables) and what they are.
SAMPLE_TYPES: dict[str, str] = {
    "01": "primary solid tumour",
    "02": "recurrent solid tumour",
    "03": "primary blood-derived cancer (peripheral blood)",
    "04": "recurrent blood-derived cancer (bone marrow)",
    "05": "additional new primary",
    "06": "metastasis",
    "07": "additional metastasis",
    "08": "human tumour original cells",
    "09": "primary blood-derived cancer (bone marrow)",
    "10": "blood-derived normal",
    "11": "solid tissue normal",
    "12": "buccal cell normal",
    "13": "EBV immortalised normal",
    "14": "bone marrow normal",
}

#: Slide type prefixes: diagnostic (FFPE) or frozen sections.
SLIDE_KINDS: dict[str, str] = {"DX": "diagnostic", "TS": "frozen", "BS": "frozen", "MS": "frozen"}

_BARCODE = re.compile(
    r"^(?P<patient>TCGA-[A-Z0-9]{2}-[A-Z0-9]{4})"
    r"(?:-(?P<stype>\d{2})(?P<vial>[A-Z])?"
    r"(?:-(?P<portion>\d{2})(?P<analyte>[A-Z])?"
    r"(?:-(?P<slide>(?P<skind>DX|TS|BS|MS)[0-9A-Z]*)|-(?P<plate>[A-Z0-9]{4})(?:-(?P<center>\d{2}))?)?"
    r")?)?$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Barcode:
    """The parts of a TCGA barcode (fields below the level the barcode names are ``None``).

    Attributes
    ----------
    text
        The barcode as given (upper case, without the GDC file UUID or extension).
    patient
        First 12 characters (``TCGA-XX-XXXX``).
    sample
        ``TCGA-XX-XXXX-NN`` (15 characters) or ``None``.
    sample_type
        Two-digit sample type code or ``None``.
    vial
        Vial letter (``A``, ``B``; slides carry ``Z``) or ``None``.
    slide
        Slide field (``DX1``, ``TS1``) or ``None``.
    """

    text: str
    patient: str
    sample: str | None = None
    sample_type: str | None = None
    vial: str | None = None
    slide: str | None = None

    @property
    def tissue(self) -> str | None:
        """``tumour`` (codes 01-09), ``normal`` (10-19), ``control`` (20-29) or ``None``."""
        if self.sample_type is None:
            return None
        code = int(self.sample_type)
        return "tumour" if code < 10 else "normal" if code < 20 else "control"

    @property
    def slide_kind(self) -> str | None:
        """``diagnostic`` (DX), ``frozen`` (TS, BS, MS) or ``None`` (not a slide barcode)."""
        return SLIDE_KINDS.get(self.slide[:2]) if self.slide else None

    @property
    def slide_type(self) -> str | None:
        """The two-letter slide type (``DX``, ``TS``, ``BS``, ``MS``) or ``None``."""
        return self.slide[:2] if self.slide else None

    @property
    def vial_sample(self) -> str | None:
        """``TCGA-XX-XXXX-NNV`` (16 characters, sample plus vial) or ``None``."""
        return f"{self.sample}{self.vial}" if self.sample and self.vial else self.sample


def parse_barcode(text: str) -> Barcode | None:
    """Parse a TCGA barcode (a GDC file name's UUID and extension are ignored); ``None`` when
    ``text`` is not one."""
    s = str(text).strip()
    head = s.split(".")[0].upper()
    m = _BARCODE.match(head)
    if m is None:
        return None
    stype = m.group("stype")
    return Barcode(
        text=head,
        patient=m.group("patient"),
        sample=f"{m.group('patient')}-{stype}" if stype else None,
        sample_type=stype,
        vial=m.group("vial"),
        slide=m.group("slide"),
    )


def parse_sample_types(spec: str | Iterable[str]) -> frozenset[str]:
    """Sample type codes from ``tumour``, ``normal``, ``all`` or codes (``01,06``).

    Raises
    ------
    ConfigError
        A word or code that is not a sample type.
    """
    words = [w.strip().lower() for w in (spec.split(",") if isinstance(spec, str) else spec) if w.strip()]
    out: set[str] = set()
    for w in words:
        if w in ("all", "any"):
            out |= {f"{i:02d}" for i in range(100)}
        elif w in ("tumour", "tumor", "cancer"):
            out |= {f"{i:02d}" for i in range(1, 10)}
        elif w == "normal":
            out |= {f"{i:02d}" for i in range(10, 20)}
        elif w in ("primary",):
            out.add("01")
        elif w in ("metastasis", "metastatic"):
            out |= {"06", "07"}
        elif re.fullmatch(r"\d{1,2}", w):
            out.add(f"{int(w):02d}")
        else:
            raise ConfigError(f"--sample-types {w!r}: use tumour, normal, primary, metastasis, all or codes "
                              f"such as 01,06 ({', '.join(f'{k} {v}' for k, v in list(SAMPLE_TYPES.items())[:7])}, "
                              "11 solid tissue normal)")
    if not out:
        raise ConfigError("--sample-types: give at least one sample type (e.g. tumour)")
    return frozenset(out)


def parse_slide_types(spec: str | Iterable[str]) -> frozenset[str]:
    """Slide types from ``diagnostic``, ``frozen``, ``all`` or prefixes (``DX,TS``).

    Raises
    ------
    ConfigError
        A word that is not a slide type.
    """
    words = [w.strip() for w in (spec.split(",") if isinstance(spec, str) else spec) if w.strip()]
    out: set[str] = set()
    for w in words:
        lw = w.lower()
        if lw in ("all", "any"):
            out |= set(SLIDE_KINDS)
        elif lw in ("diagnostic", "ffpe"):
            out.add("DX")
        elif lw == "frozen":
            out |= {"TS", "BS", "MS"}
        elif w.upper() in SLIDE_KINDS:
            out.add(w.upper())
        else:
            raise ConfigError(f"--slide-types {w!r}: use diagnostic (DX), frozen (TS, BS, MS), all, or the "
                              "two-letter types")
    if not out:
        raise ConfigError("--slide-types: give at least one slide type (e.g. diagnostic)")
    return frozenset(out)
