"""Render an update for a channel from ``templates/<type>/<folder>/<part>.j2``, falling back to ``default``."""

from __future__ import annotations

import traceback
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import (
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    StrictUndefined,
    TemplateError,
    TemplateSyntaxError,
)

from broadcaster.errors import RenderError
from channels import Channel, Message


def builtin_templates() -> Path:
    """Installed wheels carry the templates inside the package; a source checkout keeps them at the top."""
    here = Path(__file__).parent
    packaged = here / "templates"
    return packaged if packaged.is_dir() else here.parent / "templates"


@cache
def environment(extra_dir: str | None = None) -> Environment:
    loaders = [FileSystemLoader(extra_dir)] if extra_dir else []
    loaders.append(FileSystemLoader(builtin_templates()))
    env = Environment(
        loader=ChoiceLoader(loaders),
        undefined=StrictUndefined,
        autoescape=lambda name: bool(name and name.endswith(".html.j2")),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    return env


def render(channel: Channel, folder: str, context: dict[str, Any], templates_dir: str | None = None) -> Message:
    """Render every part of ``channel`` from ``<type>/<folder>/`` (else ``<type>/default/``) and shape it."""
    env = environment(templates_dir)
    parts: dict[str, str] = {}
    for part, filename in channel.templates.items():
        names = [f"{channel.type}/{folder}/{filename}.j2", f"{channel.type}/default/{filename}.j2"]
        name = names[0]
        try:
            template = env.select_template(names)
            name = template.name or name
            parts[part] = template.render(context, channel=channel.name)
        except TemplateSyntaxError as exc:
            raise RenderError(f"template {exc.name or name}, line {exc.lineno}: {exc.message}") from None
        except TemplateError as exc:
            raise RenderError(f"template {name}, line {_template_line(exc)}: {exc.message}") from None
    return channel.shape(parts, context)


def _template_line(exc: BaseException) -> int | str:
    """Jinja rewrites tracebacks so template frames carry the template's own line numbers."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename.endswith(".j2"):
            return frame.lineno or "?"
    return "?"
