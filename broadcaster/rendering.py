"""Render an update for a channel from ``templates/<type>/<folder>/<part>.j2``, falling back to ``default``.

A channel type that ships no template for a part (a plugin's, say) renders it from the generic default
(``templates/_generic/``: title, status, message, link): ``title.txt`` by that name, any other part by its
format (``body.txt``, ``body.md``, ``body.html``). A plugin may ship its own templates in its package
(``Channel.templates_dir``, laid out as ``templates/``); a ``templates_dir`` setting overrides them all.
"""

from __future__ import annotations

import traceback
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    StrictUndefined,
    TemplateError,
    TemplateSyntaxError,
)

from broadcaster.core.errors import RenderError
from channels import Channel, Message


def builtin_templates() -> Path:
    """Installed wheels carry the templates inside the package; a source checkout keeps them at the top."""
    here = Path(__file__).parent
    packaged = here / "templates"
    return packaged if packaged.is_dir() else here.parent / "templates"


#: appended to the name of a template that an HTML template imports or includes: its HTML copy
HTML_COPY = "#html"


def is_html(name: str | None) -> bool:
    """HTML templates, and the HTML copies of what they import, are autoescaped."""
    return bool(name and (name.endswith(".html.j2") or name.endswith(HTML_COPY)))


class _Environment(Environment):
    """Jinja compiles a macro with the autoescape setting of the template that defines it, not of its caller.

    So ``{% from "_shared/macros.j2" import ... %}`` in ``body.html.j2`` would run the macros unescaped (and
    mark their output safe). Here an HTML template's imports and includes load a copy of the template compiled
    for HTML (autoescaped), and text templates keep the plain one: HTML escaped once, text never.
    """

    def join_path(self, template: str, parent: str) -> str:
        if is_html(parent) and not is_html(template):
            return template + HTML_COPY
        return template


class _CopyLoader(BaseLoader):
    """Loads a template's HTML copy from the template's own source."""

    def __init__(self, loader: BaseLoader) -> None:
        self.loader = loader

    def get_source(self, environment: Environment, template: str) -> tuple[str, str | None, Any]:
        return self.loader.get_source(environment, template.removesuffix(HTML_COPY))

    def list_templates(self) -> list[str]:
        return self.loader.list_templates()


@cache
def environment(extra_dir: str | None = None, channel_dir: str | None = None) -> Environment:
    """The templates of ``extra_dir`` (the ``templates_dir`` setting), then a channel's own, then the built-in."""
    loaders: list[BaseLoader] = [FileSystemLoader(d) for d in (extra_dir, channel_dir) if d]
    loaders.append(FileSystemLoader(builtin_templates()))
    env = _Environment(
        loader=_CopyLoader(ChoiceLoader(loaders)),
        undefined=StrictUndefined,
        autoescape=is_html,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    return env


def render(channel: Channel, folder: str, context: dict[str, Any], templates_dir: str | None = None) -> Message:
    """Render every part of ``channel`` from ``<type>/<folder>/`` (else ``<type>/default/``) and shape it."""
    env = environment(templates_dir, str(channel.templates_dir) if channel.templates_dir else None)
    parts: dict[str, str] = {}
    for part, filename in channel.templates.items():
        names = [f"{channel.type}/{folder}/{filename}.j2", f"{channel.type}/default/{filename}.j2"]
        names += [f"_generic/{filename}.j2", f"_generic/body{Path(filename).suffix or '.txt'}.j2"]
        name = names[0]
        try:
            template = env.select_template(names)
            name = template.name or name
            parts[part] = template.render(context, channel=channel.name)
        except TemplateSyntaxError as exc:
            where = (exc.name or name).removesuffix(HTML_COPY)
            raise RenderError(f"template {where}, line {exc.lineno}: {exc.message}") from None
        except TemplateError as exc:
            raise RenderError(f"template {name}, line {_template_line(exc)}: {exc.message}") from None
    return channel.shape(parts, context)


def _template_line(exc: BaseException) -> int | str:
    """Jinja rewrites tracebacks so template frames carry the template's own line numbers."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename.endswith(".j2"):
            return frame.lineno or "?"
    return "?"
