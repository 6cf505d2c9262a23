"""One `render(template, **context)` for every report and notification text.

Templates live in `templates/<procedure>/<purpose>.<lang>.<format>.j2`; Chinese is the default
language. StrictUndefined turns a missing value into an error instead of an empty gap, and HTML
is autoescaped, so text a customer typed is shown as text (never as markup).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateNotFound, select_autoescape

from models.settings import business_timezone

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


# What autoescapes: every HTML page aftercare serves or renders (web/templates/*.html.j2, the report
# templates) escapes; the plain-text notification bodies (*.txt.j2, *.md.j2) must not, or a customer
# would read "&lt;" in a chat message — they are escaped where they are shown as HTML (tasks.channels
# converts them with Apprise's own text→HTML for an HTML channel). Anything else escapes too.
AUTOESCAPE = select_autoescape(
    enabled_extensions=("html", "htm", "xml", "svg", "html.j2", "htm.j2", "xml.j2", "svg.j2"),
    disabled_extensions=("txt", "md", "txt.j2", "md.j2"),
    default_for_string=True,
    default=True,
)


@cache
def environment(root: Path = TEMPLATES) -> Environment:
    """The one Jinja2 environment factory: reports and notifications (`templates/`) and every page of
    the approval web (`web/templates/`) are rendered by an environment made here — autoescaped HTML,
    StrictUndefined, the `local` time filter."""
    env = Environment(
        loader=FileSystemLoader(str(root)),
        undefined=StrictUndefined,
        autoescape=AUTOESCAPE,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["local"] = _local_time
    env.filters["fold"] = fold
    return env


FOLD_LINES = 8
FOLD_CHARS = 600


def fold(text: Any, lines: int = FOLD_LINES, chars: int = FOLD_CHARS, where: str = "报告") -> str:
    """A long text as pages and messages show it: its first lines, then "……（共 N 行，全文见报告）".

    The record keeps the whole text (a 20,000-character command log is stored as typed); the
    signing page, the PDF and every message show the beginning only. Used everywhere a person's
    long text is shown (Jinja filter `fold`); `where` names where the whole text is (the report
    itself says 案件记录)."""
    value = "" if text is None else str(text)
    kept = value.splitlines()
    head = "\n".join(kept[:lines])
    if len(kept) <= lines and len(value) <= chars:
        return value
    if len(head) > chars:
        head = head[:chars].rstrip()
    return f"{head}\n……（共 {len(kept)} 行、{len(value)} 字，全文见{where}）"


def _local_time(value: Any, fmt: str = "%Y-%m-%d %H:%M", tz: str | None = None) -> str:
    """Show an aware UTC datetime in the contract's time zone (the business time zone by default)."""
    if value is None:
        return ""
    import pendulum

    return pendulum.instance(value).in_timezone(tz or business_timezone()).strftime(fmt)


def template_name(name: str, lang: str = "zh", fmt: str = "html") -> str:
    """`repair/service_report` → `repair/service_report.zh.html.j2`."""
    return f"{name}.{lang}.{fmt}.j2"


def render(name: str, /, *, lang: str = "zh", fmt: str = "html", **context: Any) -> str:
    """Render a template; falls back to Chinese when the language has no version of it."""
    env = environment()
    try:
        template = env.get_template(template_name(name, lang, fmt))
    except TemplateNotFound:
        if lang == "zh":
            raise
        template = env.get_template(template_name(name, "zh", fmt))
    return template.render(**context)
