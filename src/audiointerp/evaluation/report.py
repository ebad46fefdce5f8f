"""Reports: `report.md` that references figure and audio files, and a self-contained `report.html`.

The HTML embeds every figure and clip as a data URI, so one file can be mailed or attached to a paper's
supplement. Sections are added by each stage (later issues add theirs).
"""

from __future__ import annotations

import base64
import html
import mimetypes
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

_STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #444}h2{margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:1em 0;font-size:.92em}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}
th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee}figure{margin:1em 0}
figcaption{font-size:.9em;color:#555}audio{height:32px;vertical-align:middle}code{background:#f4f4f4;padding:0 .2em}
"""


@dataclass
class Audio:
    """A clip in a report table or list: a WAV file relative to the report's folder."""

    path: Path
    label: str = ""


@dataclass
class Section:
    title: str
    text: str = ""  # paragraphs; blank lines separate them
    figures: list[tuple[Path, str]] = field(default_factory=list)  # (png path, caption)
    tables: list[tuple[list[str], list[list[Any]]]] = field(default_factory=list)  # (header, rows)
    bullets: list[str] = field(default_factory=list)


@dataclass
class Report:
    """A report written into `folder`; every referenced file must live under it."""

    folder: Path
    title: str
    intro: str = ""
    sections: list[Section] = field(default_factory=list)

    def section(self, title: str, text: str = "") -> Section:
        section = Section(title, text)
        self.sections.append(section)
        return section

    # --- paths ----------------------------------------------------------------------------------------
    def _rel(self, path: Path) -> str:
        return Path(os.path.relpath(Path(path).resolve(), self.folder.resolve())).as_posix()

    def referenced_files(self) -> list[Path]:
        """Every figure and audio file the report points at (absolute paths)."""
        files = []
        for section in self.sections:
            files += [self.folder / self._rel(p) for p, _ in section.figures]
            for _, rows in section.tables:
                files += [self.folder / self._rel(cell.path) for row in rows for cell in row if isinstance(cell, Audio)]
        return files

    # --- markdown -------------------------------------------------------------------------------------
    def _md_cell(self, cell: Any) -> str:
        if isinstance(cell, Audio):
            return f"[{cell.label or Path(cell.path).name}]({self._rel(cell.path)})"
        if isinstance(cell, float):
            return f"{cell:.4f}"
        return str(cell).replace("|", "\\|")

    def markdown(self) -> str:
        lines = [f"# {self.title}", "", self.intro, ""]
        for section in self.sections:
            lines += [f"## {section.title}", "", section.text, ""]
            lines += [f"- {b}" for b in section.bullets] + ([""] if section.bullets else [])
            for header, rows in section.tables:
                lines.append("| " + " | ".join(header) + " |")
                lines.append("|" + "---|" * len(header))
                lines += ["| " + " | ".join(self._md_cell(c) for c in row) + " |" for row in rows]
                lines.append("")
            for path, caption in section.figures:
                lines += [f"![{caption}]({self._rel(path)})", f"*{caption}*", ""]
        return "\n".join(lines).rstrip() + "\n"

    # --- html -----------------------------------------------------------------------------------------
    @staticmethod
    def _data_uri(path: Path) -> str:
        mime = mimetypes.guess_type(str(path))[0] or "application/octet-stream"
        if path.suffix.lower() == ".wav":
            mime = "audio/wav"
        return f"data:{mime};base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")

    def _html_cell(self, cell: Any) -> str:
        if isinstance(cell, Audio):
            label = f"<br><small>{html.escape(cell.label)}</small>" if cell.label else ""
            return f'<audio controls preload="none" src="{self._data_uri(cell.path)}"></audio>{label}'
        if isinstance(cell, float):
            return f"{cell:.4f}"
        return html.escape(str(cell))

    @staticmethod
    def _paragraphs(text: str) -> str:
        return "".join(f"<p>{html.escape(p.strip())}</p>" for p in text.split("\n\n") if p.strip())

    def html(self) -> str:
        parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>",
                 f"<style>{_STYLE}</style></head><body><h1>{html.escape(self.title)}</h1>", self._paragraphs(self.intro)]
        for section in self.sections:
            parts += [f"<h2>{html.escape(section.title)}</h2>", self._paragraphs(section.text)]
            if section.bullets:
                parts.append("<ul>" + "".join(f"<li>{html.escape(b)}</li>" for b in section.bullets) + "</ul>")
            for header, rows in section.tables:
                head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
                body = "".join("<tr>" + "".join(f"<td>{self._html_cell(c)}</td>" for c in row) + "</tr>" for row in rows)
                parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            for path, caption in section.figures:
                parts.append(f"<figure><img alt='{html.escape(caption)}' src='{self._data_uri(path)}'>"
                             f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        parts.append("</body></html>")
        return "\n".join(parts)

    def write(self) -> tuple[Path, Path]:
        """Write report.md and report.html; every referenced file must exist."""
        missing = [p for p in self.referenced_files() if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"report references missing files: {', '.join(map(str, missing[:5]))}")
        self.folder.mkdir(parents=True, exist_ok=True)
        md, page = self.folder / "report.md", self.folder / "report.html"
        md.write_text(self.markdown(), encoding="utf-8")
        page.write_text(self.html(), encoding="utf-8")
        return md, page


def metrics_table(metrics: dict[str, float], keys: Sequence[str] | None = None) -> tuple[list[str], list[list[Any]]]:
    """A two-column metric/value table."""
    keys = keys or sorted(metrics)
    return ["metric", "value"], [[k, float(metrics[k])] for k in keys if k in metrics]
