"""Everything `ladder grade` writes: feedback, Gradescope results, the gradebook, a class report.

`write_all(results, exercises, GRADES)` lays out:

    GRADES/
      gradebook.csv           a row per learner, a column per exercise, total (see write_gradebook)
      report.html             the class report: one self-contained page, charts as inline SVG
      learners.json           folder name -> learner name, for every learner folder below
      <folder>/feedback.md    what the learner reads
      <folder>/feedback.json  the same, as data
      <folder>/results.json   Gradescope autograder results

Learner names are untrusted: a folder name comes from `learner_dirname` (never a path), and every
learner-provided string is cleaned of control characters and escaped for Markdown, HTML or CSV
where it is written. Files are written atomically, so a killed run leaves whole files only.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import math
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import quote

from graders.results import CaseResult, LearnerResult

TOP_LEVEL_FILES = ("gradebook.csv", "report.html", "learners.json")
# names a learner folder must never take: ours, and those the grading run keeps in GRADES/
RESERVED_NAMES = frozenset({*TOP_LEVEL_FILES, "journal.jsonl"})
LEARNER_FILES = ("feedback.md", "feedback.json", "results.json")
MAX_ROW = "(max points)"  # the `learner` cell of the gradebook's maximum row
VISIBILITIES = ("hidden", "after_due_date", "after_published", "visible")

# (exercise, case) -> the speed bound: the learner may take up to this times the reference's time
SpeedBounds = Mapping[tuple[str, str], float]

# ---------------------------------------------------------------- names, text and files

_PLAIN = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul"} | {
    f"{d}{i}" for d in ("com", "lpt") for i in "123456789"
}
# C0/C1 controls (but tab and newline) and bidi overrides, which could disguise a name
_UNSAFE_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def learner_dirname(learner: str) -> str:
    """A safe, stable folder name for a learner, the same on every run and every OS.

    A plain name (lower-case letters, digits, `_.-`, not a reserved or top-level file name) is kept
    as it is; any other becomes an ASCII slug plus `+` and a hash of the exact name, so two names
    never share a folder, even on a case-insensitive file system (plain names have no `+`).
    """
    base = learner.split(".")[0]
    if (
        _PLAIN.fullmatch(learner)
        and not learner.endswith(".")
        and base not in _WINDOWS_RESERVED
        and learner not in RESERVED_NAMES
    ):
        return learner
    ascii_name = unicodedata.normalize("NFKD", learner).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", ascii_name).strip("_-")[:48] or "learner"
    digest = hashlib.sha256(learner.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{slug}+{digest}"


def clean(text: object) -> str:
    """Text that is safe to write as UTF-8: no lone surrogates, control or bidi characters."""
    s = str(text).encode("utf-8", "replace").decode("utf-8")
    return _UNSAFE_CHARS.sub("", s.replace("\r\n", "\n").replace("\r", "\n"))


def md(text: object) -> str:
    """Inline Markdown for an untrusted string: one line, no markup, no HTML."""
    s = re.sub(r"\s+", " ", clean(text)).strip()
    s = re.sub(r"([\\`*_\[\]{}|~#])", r"\\\1", s)
    return html.escape(s, quote=False)


def esc(text: object) -> str:
    """HTML text or attribute value for an untrusted string."""
    return html.escape(clean(text), quote=True)


def csv_cell(text: object) -> str:
    """A CSV text cell that a spreadsheet will not run as a formula."""
    s = clean(text)
    return "'" + s if s[:1] in ("=", "+", "-", "@", "\t", "\r") else s


def num(x: float | None, digits: int = 2) -> str:
    """2 -> "2", 1.5 -> "1.5", 1/3 -> "0.33"; "?" for nothing or not finite."""
    if x is None or not math.isfinite(x):
        return "?"
    s = f"{x:.{digits}f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _points(x: float) -> float:
    """A score for JSON: finite, rounded off float noise."""
    return float(round(x, 4)) if math.isfinite(x) else 0.0


def _write(path: Path, text: str) -> None:
    """Write atomically: a killed run leaves the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)  # a stale or planted file (or link) there is not ours to follow
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with open(fd, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    os.replace(tmp, path)  # replaces a symlink at `path` itself, never its target


def _learner_folder(folder: Path, learner: str) -> Path:
    path = folder / learner_dirname(learner)
    if path.is_symlink():  # a planted link must not send a learner's files elsewhere
        path.unlink()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _json(data: object) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


# ---------------------------------------------------------------- what a case says


def mistake(diagnosis: str) -> str:
    """The learner-facing part of a diagnosis: "matches mutant X: <text>" -> "<text>"."""
    m = re.match(r"\s*matches\b[^:]*:\s*(.+)", diagnosis, re.S)
    return (m.group(1) if m else diagnosis).strip()


def passed(case: CaseResult) -> bool:
    return case.points >= case.max_points - 1e-9


def _diagnosed(case: CaseResult) -> str:
    """The known mistake that explains a failed case, or ""."""
    return mistake(case.diagnosis) if case.diagnosis and not passed(case) else ""


def split_message(case: CaseResult) -> tuple[str, str]:
    """(about correctness, about speed): a case with full correctness points lost only speed points,
    so its message (`CaseResult.message` says why points were lost) is about speed."""
    if passed(case) and case.max_speed_points and case.message:
        return "", case.message
    return case.message, ""


def speed_text(case: CaseResult, bound: float | None = None) -> str:
    """Say "1.8× the reference's time; up to 4× allowed", or "not timed"."""
    ratio = _finite(case.speed_ratio)
    if ratio is None:
        return "not timed"
    allowed = f"; up to {num(bound)}× allowed" if bound else ""
    return f"{ratio:.3g}× the reference's time{allowed}"


def _bound(case: CaseResult, bounds: SpeedBounds | None) -> float | None:
    if bounds and (case.exercise, case.case) in bounds:
        return bounds[(case.exercise, case.case)]
    return getattr(case, "speed_bound", None)  # if CaseResult ever carries it


def by_exercise(cases: Iterable[CaseResult]) -> dict[str, list[CaseResult]]:
    """Cases grouped by exercise, in the order they were graded."""
    groups: dict[str, list[CaseResult]] = {}
    for c in cases:
        groups.setdefault(c.exercise, []).append(c)
    return groups


def exercise_order(results: Iterable[LearnerResult], exercises: Iterable[str]) -> list[str]:
    """`exercises`, then any exercise the results hold that it lacks, in order of appearance."""
    order = list(dict.fromkeys(exercises))
    for r in results:
        order += [e for e in by_exercise(r.cases) if e not in order]
    return order


def _sorted(results: Iterable[LearnerResult]) -> list[LearnerResult]:
    return sorted(results, key=lambda r: (r.learner.casefold(), r.learner))


# ---------------------------------------------------------------- per-learner feedback


def write_feedback(
    result: LearnerResult, folder: Path, *, speed_bounds: SpeedBounds | None = None
) -> Path:
    """Write `folder/<learner_dirname>/feedback.md` and `feedback.json`; return that folder."""
    target = _learner_folder(folder, result.learner)
    _write(target / "feedback.md", feedback_markdown(result, speed_bounds))
    _write(target / "feedback.json", _json(feedback_data(result, speed_bounds)))
    return target


def feedback_data(result: LearnerResult, speed_bounds: SpeedBounds | None = None) -> dict:
    """The learner's feedback as plain JSON-ready data."""
    score, top = result.total
    exercises = [
        {
            "exercise": clean(ex),
            "score": _points(sum(c.score for c in cases)),
            "max_score": _points(sum(c.max_score for c in cases)),
            "cases": [_case_data(c, _bound(c, speed_bounds)) for c in cases],
        }
        for ex, cases in by_exercise(result.cases).items()
    ]
    return {
        "learner": clean(result.learner),
        "folder": learner_dirname(result.learner),
        "notes": [clean(n) for n in result.notes],
        "score": _points(score),
        "max_score": _points(top),
        "exercises": exercises,
    }


def _case_data(c: CaseResult, bound: float | None) -> dict:
    data = {
        "case": clean(c.case),
        "passed": passed(c),
        "points": _points(c.points),
        "max_points": _points(c.max_points),
        "message": clean(split_message(c)[0]),
        "mistake": clean(_diagnosed(c)),
    }
    if c.max_speed_points or c.speed_ratio is not None:
        data |= {
            "speed_message": clean(split_message(c)[1] or speed_text(c, bound)),
            "speed_ratio": _finite(c.speed_ratio),
            "speed_bound": _finite(bound),
            "speed_points": _points(c.speed_points),
            "max_speed_points": _points(c.max_speed_points),
        }
    return data | {"score": _points(c.score), "max_score": _points(c.max_score)}


def feedback_markdown(result: LearnerResult, speed_bounds: SpeedBounds | None = None) -> str:
    """What the learner reads: notes, totals, then every case with what went wrong."""
    score, top = result.total
    lines = [f"# Feedback for {md(result.learner)}", ""]
    lines += [f"> **Note:** {md(n)}" for n in result.notes]
    lines += [""] if result.notes else []
    lines += [f"**Total: {num(score)} / {num(top)}**{_percent(score, top)}", ""]
    if top > 0 and score >= top - 1e-9:
        lines += ["Every case passes. Well done!", ""]
    groups = by_exercise(result.cases)
    if not groups:
        return "\n".join([*lines, "No case was graded.", ""])
    lines += ["| exercise | score |", "| --- | --- |"]
    lines += [f"| {md(ex)} | {_ratio_text(cases)} |" for ex, cases in groups.items()]
    for ex, cases in groups.items():
        lines += ["", f"## {md(ex)}: {_ratio_text(cases)}", ""]
        for c in cases:
            lines += _case_markdown(c, _bound(c, speed_bounds))
    return "\n".join([*lines, ""])


def _percent(score: float, top: float) -> str:
    return f" ({100 * score / top:.0f}%)" if top > 0 else ""


def _ratio_text(cases: list[CaseResult]) -> str:
    return f"{num(sum(c.score for c in cases))} / {num(sum(c.max_score for c in cases))}"


def _case_markdown(c: CaseResult, bound: float | None) -> list[str]:
    mark = "✅" if passed(c) else "❌"
    lines = [f"- {mark} **{md(c.case)}**: {num(c.points)} / {num(c.max_points)}"]
    message, speed_message = split_message(c)
    if message:
        lines += _message_markdown(message)
    if diagnosis := _diagnosed(c):
        lines.append(f"  - Your output matches a known mistake: {md(diagnosis)}")
    if c.max_speed_points or c.speed_ratio is not None:
        speed = f"{num(c.speed_points)} / {num(c.max_speed_points)}"
        lines.append(f"  - Speed: {speed} ({md(speed_message or speed_text(c, bound))})")
    return lines


def _message_markdown(message: str) -> list[str]:
    """One line inline; several lines verbatim in a code block no line of theirs can close."""
    text = clean(message).strip("\n")
    if "\n" not in text:
        return [f"  - {md(text)}"]
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return ["", f"  {fence}text", *(f"  {ln}" for ln in text.split("\n")), f"  {fence}", ""]


# ---------------------------------------------------------------- Gradescope


def gradescope_results(
    result: LearnerResult,
    *,
    visibility: str = "visible",
    execution_time: float | None = None,
    speed_bounds: SpeedBounds | None = None,
) -> dict:
    """Gradescope's `results.json` for one learner, as data.

    One test per case, plus a separate "<exercise>: <case> (speed)" test for each case whose speed
    is graded, so a right-but-slow answer shows as a passed test and a failed one. Names and
    outputs are plain text (`"text"`: shown verbatim, no markup from learner output); tests come in
    grading order, tagged with their exercise; the grader's stdout stays hidden from learners.
    """
    if visibility not in VISIBILITIES:
        raise ValueError(f"visibility must be one of {VISIBILITIES}, not {visibility!r}")
    tests = []
    for c in result.cases:
        tests += _gradescope_tests(c, visibility, _bound(c, speed_bounds))
    payload = {
        "score": _points(result.total[0]),
        "output": _gradescope_summary(result),
        "output_format": "text",
        "visibility": visibility,
        "stdout_visibility": "hidden",
        "tests": tests,
    }
    if execution_time is not None and math.isfinite(execution_time):
        payload["execution_time"] = max(0, round(execution_time))
    return payload


def _gradescope_tests(c: CaseResult, visibility: str, bound: float | None) -> list[dict]:
    name = f"{clean(c.exercise)}: {clean(c.case)}"
    message, speed_message = (clean(m) for m in split_message(c))
    output = message or ("Correct." if passed(c) else "Incorrect.")
    if diagnosis := _diagnosed(c):
        output += f"\nYour output matches a known mistake: {clean(diagnosis)}"
    common = {"output_format": "text", "name_format": "text", "visibility": visibility}
    tests = [
        {
            "name": name,
            "score": _points(c.points),
            "max_score": _points(c.max_points),
            "status": "passed" if passed(c) else "failed",
            "output": output,
            "tags": [clean(c.exercise)],
        }
    ]
    if c.max_speed_points:
        full = c.speed_points >= c.max_speed_points - 1e-9
        tests.append(
            {
                "name": f"{name} (speed)",
                "score": _points(c.speed_points),
                "max_score": _points(c.max_speed_points),
                "status": "passed" if full else "failed",
                "output": speed_message or f"Speed: {speed_text(c, bound)}.",
                "tags": [clean(c.exercise), "speed"],
            }
        )
    return [t | common for t in tests]


def _gradescope_summary(result: LearnerResult) -> str:
    score, top = result.total
    lines = [f"Note: {clean(n)}" for n in result.notes]
    lines.append(f"Total: {num(score)} / {num(top)}")
    lines += [
        f"{clean(ex)}: {num(s)} / {num(m)}" for ex, (s, m) in result.exercise_scores().items()
    ]
    return "\n".join(lines)


def write_gradescope(
    result: LearnerResult,
    path: Path,
    *,
    visibility: str = "visible",
    execution_time: float | None = None,
    speed_bounds: SpeedBounds | None = None,
) -> None:
    """Write Gradescope's `results.json`; should that fail, write an error one and re-raise."""
    try:
        payload = gradescope_results(
            result, visibility=visibility, execution_time=execution_time, speed_bounds=speed_bounds
        )
        _write(path, _json(payload))
    except Exception as error:
        gradescope_error(f"The grader failed while writing your results: {error!r}", path)
        raise


def gradescope_error(message: str, path: Path) -> None:
    """A valid `results.json` for a run that crashed: score 0, the message as the output."""
    payload = {
        "score": 0.0,
        "output": clean(message) or "The grader failed.",
        "output_format": "text",
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": [],
    }
    _write(path, _json(payload))


# ---------------------------------------------------------------- gradebook


def write_gradebook(results: list[LearnerResult], exercises: list[str], path: Path) -> None:
    """Write `gradebook.csv`: a header, a maximum row, then a row per learner sorted by name.

    Columns: `learner`, one per exercise (its score), `total`, `folder` (where the learner's
    feedback lies). Exercises the results hold beyond `exercises` get columns too, so `total` is
    the sum of the row. The row right under the header has `learner` = "(max points)" and the
    maxima (empty for an exercise nobody has). A cell is empty where a learner has no graded case
    for that exercise. Scores are plain numbers (up to 4 decimals); text cells starting with
    = + - @ (or tab, CR) are prefixed with ' so that no spreadsheet runs them as formulas.
    """
    order = exercise_order(results, exercises)
    rows = [[csv_cell(h) for h in ("learner", *order, "total", "folder")]]
    maxima: dict[str, float] = {}
    for r in results:
        for ex, (_, top) in r.exercise_scores().items():
            maxima[ex] = max(maxima.get(ex, 0.0), top)
    top_row = [num(maxima[ex], 4) if ex in maxima else "" for ex in order]
    rows.append([MAX_ROW, *top_row, num(sum(maxima.values()), 4), ""])
    for r in _sorted(results):
        scores = r.exercise_scores()
        cells = [num(scores[ex][0], 4) if ex in scores else "" for ex in order]
        name, folder = csv_cell(r.learner), learner_dirname(r.learner)
        rows.append([name, *cells, num(r.total[0], 4), folder])
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    _write(path, buffer.getvalue())


# ---------------------------------------------------------------- class report: charts

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 980px; color: #222; }
h1, h2, h3 { font-weight: 600; } h3 { margin-bottom: .2em; }
section { border-top: 1px solid #ddd; padding-top: .6em; margin-top: 1.2em; }
.charts { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
figure { margin: 0; } figcaption { font-size: 12px; color: #555; }
svg text { font: 11px system-ui, sans-serif; fill: #333; }
.axis { stroke: #999; stroke-width: 1; } .grid { stroke: #eee; }
.bar { fill: #4c78a8; } .mistake { fill: #e45756; }
.dot { fill: #4c78a8; fill-opacity: .65; } .slow { fill: #e45756; }
.ref { stroke: #888; stroke-dasharray: 4 3; } .bound { stroke: #e45756; stroke-width: 2; stroke-dasharray: 5 3; }
svg text.bound-label { fill: #e45756; }
.empty { color: #777; font-style: italic; }
table { border-collapse: collapse; font-size: 13px; } td, th { padding: 3px 8px; border-bottom: 1px solid #eee; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
"""  # noqa: E501


def _f(x: float) -> str:
    return f"{x:.1f}"


def _svg(kind: str, width: int, height: int, title: str, body: list[str]) -> str:
    return (
        f'<svg class="chart" data-chart="{kind}" xmlns="http://www.w3.org/2000/svg" width="{width}"'
        f' height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{esc(title)}">'
        f"<title>{esc(title)}</title>{''.join(body)}</svg>"
    )


def _text(x: float, y: float, s: str, anchor: str = "start", tip: str = "", cls: str = "") -> str:
    tip_el = f"<title>{esc(tip)}</title>" if tip else ""
    attrs = f'x="{_f(x)}" y="{_f(y)}" text-anchor="{anchor}"' + (f' class="{cls}"' if cls else "")
    return f"<text {attrs}>{tip_el}{esc(s)}</text>"


def _short(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def histogram_svg(fractions: list[float], title: str, kind: str = "scores") -> str:
    """Counts of scores (as fractions of the maximum) in ten bins from 0% to 100%."""
    width, height, left, right, top, bottom = 420, 170, 34, 10, 16, 30
    bins = [0] * 10
    for f in fractions:
        bins[min(9, max(0, int(f * 10)))] += 1
    peak, pw, ph = max(bins) or 1, (width - left - right) / 10, height - top - bottom
    body = [
        f'<line class="axis" x1="{left}" y1="{top + ph}" x2="{width - right}" y2="{top + ph}"/>'
    ]
    for i, n in enumerate(bins):
        bh, x = ph * n / peak, left + i * pw
        tip = f"{i * 10}–{i * 10 + 10}%: {n} learner{'s' if n != 1 else ''}"
        body.append(
            f'<rect class="bar" x="{_f(x + 1)}" y="{_f(top + ph - bh)}" width="{_f(pw - 2)}"'
            f' height="{_f(bh)}"><title>{esc(tip)}</title></rect>'
        )
        if n:
            body.append(_text(x + pw / 2, top + ph - bh - 3, str(n), "middle"))
    for pct in (0, 50, 100):
        body.append(
            _text(left + pct / 100 * (width - left - right), height - 12, f"{pct}%", "middle")
        )
    body.append(_text(4, top + 4, "count"))
    return _svg(kind, width, height, title, body)


def bar_chart_svg(items: list[tuple[str, int]], title: str) -> str:
    """Horizontal bars, one per (label, count), largest first, labels above their bars."""
    width, row, pad = 640, 34, 6
    items = sorted(items, key=lambda kv: (-kv[1], kv[0]))
    peak = max((n for _, n in items), default=1) or 1
    body = []
    for i, (label, n) in enumerate(items):
        y = pad + i * row
        bw = max(2.0, (width - 60) * n / peak)
        body.append(_text(4, y + 11, _short(label, 100), tip=label))
        body.append(
            f'<rect class="mistake" x="4" y="{y + 15}" width="{_f(bw)}" height="12">'
            f"<title>{esc(label)}: {n}</title></rect>"
        )
        body.append(_text(bw + 10, y + 25, str(n)))
    return _svg("mistakes", width, pad * 2 + row * len(items), title, body)


def _log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks between 10**lo and 10**hi."""
    ticks = []
    for k in range(math.floor(lo), math.ceil(hi) + 1):
        ticks += [m * 10.0**k for m in (1, 2, 5) if lo <= math.log10(m * 10.0**k) <= hi]
    return ticks


def _jitter(*keys: str) -> float:
    """A stable offset in [-1, 1] so that equal values stay visible as separate dots."""
    digest = hashlib.sha256("\0".join(keys).encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:2], "big") / 0x7FFF - 1


SpeedRow = tuple[str, list[tuple[str, float]], float | None]  # case, [(learner, ratio)], bound


def speed_strip_svg(rows: list[SpeedRow], title: str) -> str:
    """A strip per case: each learner's time / reference's on a log axis, the bound dashed red."""
    width, left, right, top, row = 640, 150, 20, 18, 36
    values = [v for _, dots, _ in rows for _, v in dots] + [1.0]
    values += [b for _, _, b in rows if b]
    lo, hi = math.log10(min(values)) - 0.15, math.log10(max(values)) + 0.15
    if hi - lo < 1:  # show at least one decade
        mid = (hi + lo) / 2
        lo, hi = mid - 0.5, mid + 0.5
    height = top + row * len(rows) + 30
    bottom = top + row * len(rows)

    def x(v: float) -> float:
        return left + (math.log10(v) - lo) / (hi - lo) * (width - left - right)

    body = []
    for t in _log_ticks(lo, hi):
        body.append(
            f'<line class="grid" x1="{_f(x(t))}" y1="{top}" x2="{_f(x(t))}" y2="{bottom}"/>'
        )
        body.append(_text(x(t), bottom + 14, f"{t:g}×", "middle"))
    body.append(f'<line class="ref" x1="{_f(x(1))}" y1="{top - 6}" x2="{_f(x(1))}" y2="{bottom}"/>')
    body.append(_text(x(1), top - 8, "reference", "middle"))
    body.append(_text(left, height - 2, "learner's time / reference's time (log scale)"))
    for i, (case, dots, bound) in enumerate(rows):
        cy = top + i * row + row / 2
        body.append(_text(4, cy + 4, _short(case, 22), tip=case))
        if bound:
            body.append(
                f'<line class="bound" x1="{_f(x(bound))}" y1="{_f(cy - row / 2 + 3)}"'
                f' x2="{_f(x(bound))}" y2="{_f(cy + row / 2 - 3)}"><title>bound: up to'
                f" {esc(num(bound))}×</title></line>"
            )
            body.append(
                _text(x(bound) + 3, cy - row / 2 + 11, f"bound {num(bound)}×", cls="bound-label")
            )
        for learner, v in dots:
            cls = "dot slow" if bound and v > bound else "dot"
            body.append(
                f'<circle class="{cls}" cx="{_f(x(v))}" cy="{_f(cy + 10 * _jitter(learner, case))}"'
                f' r="4"><title>{esc(learner)}: {v:.3g}×</title></circle>'
            )
    return _svg("speed", width, height, title, body)


# ---------------------------------------------------------------- class report: page


def write_class_report(
    results: list[LearnerResult],
    exercises: list[str],
    path: Path,
    *,
    speed_bounds: SpeedBounds | None = None,
    title: str = "LLM Ladder: class report",
) -> None:
    """Write one self-contained HTML page (no scripts, no external assets) about the class.

    Charts are inline SVG, each `<svg class="chart" data-chart="KIND">`: the distribution of
    totals (`totals`), and per exercise the distribution of scores (`scores`), the known mistakes
    by how many learners' outputs matched them (`mistakes`) and the speed ratios on a log axis with
    each case's bound (`speed`). A chart with no data is replaced by a line of text.
    """
    results = _sorted(results)
    order = exercise_order(results, exercises)
    parts = [f"<h1>{esc(title)}</h1>"]
    if not results:
        parts.append('<p class="empty">No learner was graded.</p>')
    else:
        parts += _class_summary(results, order)
    parts += [_exercise_section(results, ex, speed_bounds) for ex in order]
    if results:
        parts.append(_learner_table(results, order))
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )
    _write(path, page)


def _class_summary(results: list[LearnerResult], order: list[str]) -> list[str]:
    fractions = [s / m for s, m in (r.total for r in results) if m > 0]
    mean = f"; mean total {100 * sum(fractions) / len(fractions):.0f}%" if fractions else ""
    lines = [f"<p>{len(results)} learners, {len(order)} exercises{mean}.</p>"]
    if fractions:
        lines.append(_figure(histogram_svg(fractions, "Totals", "totals"), "Totals, % of maximum"))
    return lines


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{esc(caption)}</figcaption></figure>"


def _exercise_section(
    results: list[LearnerResult], exercise: str, speed_bounds: SpeedBounds | None
) -> str:
    groups = [(r.learner, by_exercise(r.cases).get(exercise, [])) for r in results]
    groups = [(learner, cases) for learner, cases in groups if cases]
    head = f"<section><h3>{esc(exercise)}</h3>"
    if not groups:
        return head + '<p class="empty">Nobody attempted this exercise.</p></section>'
    totals = [(sum(c.score for c in cs), sum(c.max_score for c in cs)) for _, cs in groups]
    fractions = [s / m if m > 0 else 0.0 for s, m in totals]
    mean = sum(fractions) / len(fractions)
    figures = [_figure(histogram_svg(fractions, f"{exercise}: scores"), "Scores, % of maximum")]
    figures.append(_mistakes_figure(exercise, groups))
    figures.append(_speed_figure(exercise, groups, speed_bounds))
    summary = f"<p>Attempted by {len(groups)} of {len(results)}; mean score {100 * mean:.0f}%.</p>"
    return head + summary + '<div class="charts">' + "".join(figures) + "</div></section>"


def _mistakes_figure(exercise: str, groups: list[tuple[str, list[CaseResult]]]) -> str:
    counts: Counter[str] = Counter()
    for _, cases in groups:  # a learner counts once per mistake, however many cases it fails
        counts.update({d for c in cases if (d := _diagnosed(c))})
    if not counts:
        return '<p class="empty">No failure matched a known mistake.</p>'
    svg = bar_chart_svg(list(counts.items()), f"{exercise}: known mistakes")
    return _figure(svg, "Known mistakes: learners whose output matched each")


def _speed_figure(
    exercise: str, groups: list[tuple[str, list[CaseResult]]], speed_bounds: SpeedBounds | None
) -> str:
    rows: dict[str, SpeedRow] = {}
    for learner, cases in groups:
        for c in cases:
            ratio = _finite(c.speed_ratio)
            if ratio is None or ratio <= 0:
                continue
            row = rows.setdefault(c.case, (c.case, [], _finite(_bound(c, speed_bounds))))
            row[1].append((learner, ratio))
    if not rows:
        return '<p class="empty">No speed data.</p>'
    svg = speed_strip_svg(list(rows.values()), f"{exercise}: speed")
    return _figure(svg, "Speed: each dot a learner; red dashes: the bound")


def _learner_table(results: list[LearnerResult], order: list[str]) -> str:
    head = "".join(f"<th>{esc(ex)}</th>" for ex in order)
    rows = [
        f"<h2>Learners</h2><table><thead><tr><th>learner</th>{head}<th>total</th><th>%</th>"
        "<th>notes</th></tr></thead><tbody>"
    ]
    for r in results:
        scores = r.exercise_scores()
        cells = "".join(
            f'<td class="n">{num(scores[ex][0])} / {num(scores[ex][1])}</td>'
            if ex in scores
            else '<td class="n">–</td>'
            for ex in order
        )
        score, top = r.total
        link = esc(quote(learner_dirname(r.learner), safe="") + "/feedback.md")
        notes = esc("; ".join(r.notes))
        rows.append(
            f'<tr><td><a href="{link}">{esc(r.learner)}</a></td>{cells}'
            f'<td class="n">{num(score)} / {num(top)}</td>'
            f'<td class="n">{esc(_percent(score, top).strip(" ()"))}</td><td>{notes}</td></tr>'
        )
    return "\n".join([*rows, "</tbody></table>"])


# ---------------------------------------------------------------- everything


class ReportError(RuntimeError):
    """Raised by `write_all` after writing what it could, naming the learners it failed for."""


def write_all(
    results: list[LearnerResult],
    exercises: list[str],
    out: Path,
    *,
    speed_bounds: SpeedBounds | None = None,
    visibility: str = "visible",
) -> None:
    """Write GRADES/ (layout in the module docstring). A failure for one learner is reported at
    the end, after every other file is written; that learner still gets an error results.json."""
    names = [r.learner for r in results]
    if dupes := sorted(n for n, k in Counter(names).items() if k > 1):
        raise ValueError(f"learners graded twice: {dupes!r}")
    out.mkdir(parents=True, exist_ok=True)
    failed: list[str] = []
    for r in results:
        folder = out / learner_dirname(r.learner)
        try:
            write_feedback(r, out, speed_bounds=speed_bounds)
            write_gradescope(
                r, folder / "results.json", visibility=visibility, speed_bounds=speed_bounds
            )
        except Exception as error:
            failed.append(f"{r.learner!r}: {error!r}")
            gradescope_error(
                f"The grader failed while writing your feedback: {error!r}", folder / "results.json"
            )
    mapping = {learner_dirname(n): n for n in names}
    _write(out / "learners.json", json.dumps(mapping, indent=2, sort_keys=True) + "\n")
    write_gradebook(results, exercises, out / "gradebook.csv")
    write_class_report(results, exercises, out / "report.html", speed_bounds=speed_bounds)
    if failed:
        raise ReportError("could not write feedback for: " + "; ".join(failed))
