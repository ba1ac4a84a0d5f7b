"""`history show --html DIR`: one self-contained, interactive page per machine (plotly, its JavaScript inlined, so
nothing is fetched when the page is viewed) and an index.html that links them.

Each point's trend is a panel: the median per commit with its p20-p80 band; hover names the commit, its subject,
the median and the band; zoom and pan are plotly's; a click on a point opens the commit where a commit URL is
known (``commit_url`` with ``{commit}``, or derived from the repository's ``origin`` on GitHub or GitLab). Steps
are dashed lines with their ratio, one-commit outliers red rings, gaps grey crosses whose hover gives the reason.
The tables under the plot list the same steps, outliers and gaps (history/findings.py). The page is a function
of the history: no timestamps, fixed element ids.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
from pathlib import Path

from fastformer_bench.history import findings
from fastformer_bench.history.store import check_one_machine, entries
from fastformer_bench.history.trend import DEFAULT_MARGIN, outliers, series, steps

#: the div the figure is drawn in (fixed, so a regenerated page is byte-identical)
PLOT_ID = "history-plot"
PANEL_PX = 260
_BLUE, _RED, _GREY = "#0072B2", "#B2182B", "#777777"
#: customdata per point: commit, subject, median, band, commit URL (hover and click read these by position)
_URL = 4
_CLICK = """
var plot = document.getElementById('{plot_id}');
plot.on('plotly_click', function (event) {
  var point = event.points && event.points[0];
  var url = point && point.customdata && point.customdata[URL_INDEX];
  if (url) { window.open(url, '_blank', 'noopener'); }
});
""".replace("URL_INDEX", str(_URL))
_REMOTES = {"github.com": "https://github.com/{path}/commit/{{commit}}",
            "gitlab.com": "https://gitlab.com/{path}/-/commit/{{commit}}"}


def commit_url_from(repo: str | Path) -> str | None:
    """A commit URL template from the repository's ``origin`` remote on GitHub or GitLab, else None (no links)."""
    done = subprocess.run(["git", "-C", str(repo), "remote", "get-url", "origin"], capture_output=True, text=True)
    found = re.fullmatch(r"(?:https?://(?:[^@/]+@)?|ssh://git@|git@)([^/:]+)[:/](.+?)(?:\.git)?/?",
                         done.stdout.strip()) if done.returncode == 0 else None
    if not found or found.group(1) not in _REMOTES:
        return None
    return _REMOTES[found.group(1)].format(path=found.group(2))


def _scale(unit: str) -> tuple[float, str]:
    return (1.0, "instructions") if unit == "instructions" else (1e3, "ms")


def _fmt(value: float | None, unit: str) -> str:
    return "–" if value is None else f"{value:.4g} {unit}"


def _band(x: list[int], low: list, high: list) -> tuple[list, list]:
    """The p20-p80 band as closed shapes, one per run of commits with both values, apart where one lacks them
    (plotly's fill "toself" closes each part between None separately)."""
    band_x: list = []
    band_y: list = []
    run: list[int] = []
    for i in [*x, None]:
        if i is not None and low[i] is not None and high[i] is not None:
            run.append(i)
            continue
        if run:
            band_x += [*run, *run[::-1], None]
            band_y += [*(high[j] for j in run), *(low[j] for j in run[::-1]), None]
        run = []
    return band_x[:-1], band_y[:-1]


def _panel(fig, row: int, label: str, line: dict, filed: dict[str, dict], url: str | None, found: list,
           spikes: list) -> None:
    """One point's trend into row ``row`` of ``fig``: band, median, outliers, gaps and steps."""
    import plotly.graph_objects as go

    factor, unit = _scale(line.get("unit", "s"))
    x = list(range(len(line["commits"])))
    median = [None if v is None else v * factor for v in line["median"]]
    low = [None if v is None else v * factor for v in line["p20"]]
    high = [None if v is None else v * factor for v in line["p80"]]
    data = [[c, filed.get(c, {}).get("subject") or "", _fmt(m, unit),
             "–" if lo is None or hi is None else f"{lo:.4g}–{hi:.4g} {unit}",
             url.replace("{commit}", c) if url else ""]
            for c, m, lo, hi in zip(line["commits"], median, low, high)]
    legend = row == 1
    band_x, band_y = _band(x, low, high)
    if band_x:
        fig.add_trace(go.Scatter(x=band_x, y=band_y, mode="lines", line={"width": 0}, fill="toself", name="p20–p80",
                                 fillcolor="rgba(0,114,178,0.2)", hoverinfo="skip", showlegend=legend,
                                 legendgroup="band"), row=row, col=1)
    fig.add_trace(go.Scatter(
        x=x, y=median, mode="lines+markers", name="median", legendgroup="median", showlegend=legend,
        line={"color": _BLUE}, marker={"color": _BLUE, "size": 7}, customdata=data,
        hovertemplate=("<b>%{customdata[0]}</b><br>%{customdata[1]}<br>median %{customdata[2]}<br>"
                       "p20–p80 %{customdata[3]}<extra>" + html.escape(label) + "</extra>")), row=row, col=1)
    if spikes:
        fig.add_trace(go.Scatter(
            x=[o.at for o in spikes], y=[median[o.at] for o in spikes], mode="markers+text", name="outlier",
            legendgroup="outlier", showlegend=legend, text=[f"{o.ratio:.2f}×" for o in spikes],
            textposition="top right", textfont={"color": _RED},
            marker={"symbol": "circle-open", "size": 16, "color": _RED, "line": {"width": 2}},
            customdata=[data[o.at] for o in spikes],
            hovertemplate=("<b>outlier</b> %{text} of its neighbours<br>%{customdata[0]}<br>%{customdata[1]}"
                           "<extra></extra>")), row=row, col=1)
    gaps = [i for i, reason in enumerate(line.get("reasons", [])) if reason]
    if gaps:
        floor = min((v for v in median if v is not None), default=0.0)
        fig.add_trace(go.Scatter(
            x=gaps, y=[floor] * len(gaps), mode="markers", name="gap (no time)", legendgroup="gap",
            showlegend=legend, marker={"symbol": "x", "size": 10, "color": _GREY},
            customdata=[[*data[i][:2], line["reasons"][i], "", data[i][_URL]] for i in gaps],
            hovertemplate="<b>gap</b> %{customdata[0]}<br>%{customdata[1]}<br>%{customdata[2]}<extra></extra>"),
            row=row, col=1)
    for step in found:
        fig.add_vline(x=step.at - 0.5, line={"color": _RED, "dash": "dash"}, row=row, col=1,
                      annotation={"text": f"step {step.ratio:.3f}× [{step.ci_low:.3f}–{step.ci_high:.3f}]",
                                  "font": {"color": _RED, "size": 11}})
    fig.update_xaxes(tickmode="array", tickvals=x, ticktext=[c[:7] for c in line["commits"]], row=row, col=1)
    fig.update_yaxes(title_text=unit, row=row, col=1)


def _tables(machine: dict, url: str | None) -> str:
    """The steps, outliers and gaps as HTML tables, each commit a link where a URL is known."""
    def commit(sha: str) -> str:
        text = html.escape(sha[:12])
        return f'<a href="{html.escape(url.replace("{commit}", sha))}">{text}</a>' if url else text

    esc = html.escape
    parts = []
    for title, head, rows in (
            ("Steps", ("point", "first commit after it", "ratio", "95 % interval"),
             [(esc(s["point"]), commit(s["commit"]), f"{s['ratio']:.3f}", f"{s['ci_low']:.3f}–{s['ci_high']:.3f}")
              for s in machine["steps"]]),
            ("Outliers (one commit off the trend, its neighbours back on it: not a step)",
             ("point", "commit", "ratio to its neighbours", "noise margin"),
             [(esc(o["point"]), commit(o["commit"]), f"{o['ratio']:.3f}", f"×{o['threshold']:.3f}")
              for o in machine["outliers"]]),
            ("Gaps (no time for the point at that commit)", ("point", "commit", "reason"),
             [(esc(g["point"]), commit(g["commit"]), esc(g["reason"])) for g in machine["gaps"]])):
        body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
        parts.append(f"<h2>{esc(title)}</h2>" + (
            f"<table><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>{body}</table>" if rows else "<p>None.</p>"))
    return "\n".join(parts)


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1em; }}
td, th {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; font-size: 0.9em; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p>{answer}</p>
<p>{about}</p>
{plot}
{tables}
</body>
</html>
"""


def page(machine: str, filed: list[dict], *, normalize: bool = False, margin: float = DEFAULT_MARGIN,
         commit_url: str | None = None) -> tuple[str, dict]:
    """One machine's page (HTML text) and its summary (what history.json holds for it)."""
    from plotly.subplots import make_subplots

    check_one_machine(filed, normalize)
    lines = series(filed, normalize)
    labels = sorted(lines)
    found = {label: steps(lines[label]["median"], lines[label]["commits"], margin) for label in labels}
    spikes = {label: outliers(lines[label]["median"], lines[label]["commits"], margin) for label in labels}
    summary = {"machine": machine, "fingerprint": filed[0]["fingerprint"], "runs": len(filed),
               "commits": [e["commit"] for e in filed],
               "steps": [{"point": label, **s.as_dict()} for label in labels for s in found[label]],
               **findings.listed(lines, spikes)}
    by_commit = {e["commit"]: e for e in filed}
    fig = make_subplots(rows=len(labels), cols=1, subplot_titles=labels,
                        vertical_spacing=min(0.08, 0.5 / max(len(labels), 1)))
    for row, label in enumerate(labels, 1):
        _panel(fig, row, label, lines[label], by_commit, commit_url, found[label], spikes[label])
    area = PANEL_PX * len(labels)
    # the legend 40 px above the plot area, clear of the first panel's title
    fig.update_layout(height=area + 140, template="plotly_white", hovermode="closest",
                      margin={"l": 70, "r": 30, "t": 100, "b": 40},
                      legend={"orientation": "h", "y": 1 + 40 / area, "yanchor": "bottom", "x": 0})
    plot = fig.to_html(full_html=False, include_plotlyjs=True, div_id=PLOT_ID, post_script=_CLICK,
                       config={"displaylogo": False, "responsive": True})
    runs = f"{len(filed)} filed run{'s' if len(filed) != 1 else ''}"
    answer = (f"{len(summary['steps'])} step(s) beyond {margin:.0%} over {runs}; "
              f"{len(summary['outliers'])} one-commit outlier(s); {len({g['commit'] for g in summary['gaps']})} "
              "commit(s) with a gap.")
    print_ = json.dumps(filed[0]["fingerprint"], sort_keys=True)
    about = (f"Fingerprint {html.escape(print_)}. Median time per call of each point at each filed commit, in "
             "commit order, with its p20–p80 band; hover a point for its commit, click it to open the commit"
             + ("" if commit_url else " (no commit URL known: give --commit-url)") + ". Steps: PELT change points "
             "on log medians, kept when the 95 % bootstrap interval of the ratio lies beyond the margin"
             + ("; memory-bound points scaled by the runs' copy bandwidth." if normalize else "."))
    text = _PAGE.format(title=html.escape(f"Performance history: {machine}"), answer=html.escape(answer),
                        about=about, plot=plot, tables=_tables(summary, commit_url))
    return text, summary


def write(history_dir: str | Path, out: str | Path, *, normalize: bool = False, margin: float = DEFAULT_MARGIN,
          commit_url: str | None = None) -> list[Path]:
    """``out``/<machine>.html for every machine of the history and ``out``/index.html linking them; the pages."""
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, rows = [], []
    for machine, filed in entries(history_dir).items():
        text, summary = page(machine, filed, normalize=normalize, margin=margin, commit_url=commit_url)
        target = out_dir / f"{machine}.html"
        target.write_text(text, encoding="utf-8")
        written.append(target)
        rows.append(f'<tr><td><a href="{html.escape(target.name)}">{html.escape(machine)}</a></td>'
                    f"<td>{summary['runs']}</td><td>{len(summary['steps'])}</td><td>{len(summary['outliers'])}</td>"
                    f"<td>{len({g['commit'] for g in summary['gaps']})}</td></tr>")
    table = ("<table><tr><th>machine</th><th>runs</th><th>steps</th><th>outliers</th><th>commits with a gap</th>"
             f"</tr>{''.join(rows)}</table>")
    (out_dir / "index.html").write_text(_PAGE.format(title="Performance history", answer="One page per machine.",
                                                     about="", plot="", tables=table), encoding="utf-8")
    return written
