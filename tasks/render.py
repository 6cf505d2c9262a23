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

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


@cache
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        undefined=StrictUndefined,
        autoescape=select_autoescape(enabled_extensions=("html", "html.j2"), default_for_string=False),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["local"] = _local_time
    return env


def _local_time(value: Any, fmt: str = "%Y-%m-%d %H:%M", tz: str = "Asia/Shanghai") -> str:
    """Show an aware UTC datetime in the contract's time zone (Asia/Shanghai by default)."""
    if value is None:
        return ""
    import pendulum

    return pendulum.instance(value).in_timezone(tz).strftime(fmt)


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
