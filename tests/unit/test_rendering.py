"""Rendering an update for a channel from its templates (broadcaster.rendering): no database, no provider."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from broadcaster.core.errors import RenderError
from broadcaster.rendering import render
from channels import Channel, channel_types
from tests.support.settings import webhook

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
URL = "https://status.example.com/incidents/01JINCIDENT"


def channel(kind: str, name: str, **keys: Any) -> Channel[Any]:
    """A real channel of type ``kind``, configured as its table in a configuration file would."""
    tables = {
        "webhook": webhook(name),
        "email": {
            "type": "email",
            "host": "127.0.0.1",
            "sender": "status@example.com",
            "recipients": ["ops@example.com"],
        },
    }
    kind_class = channel_types()[kind]
    return kind_class(name, kind_class.Config.model_validate({**tables[kind], **keys}))


def context(status: str = "identified", message: str = "Payments fail <b>sometimes</b> & retry.") -> dict[str, Any]:
    """What the templates see of one update of an incident (as ``render_context`` builds it)."""
    incident = {
        "id": "01JINCIDENT",
        "title": "Checkout <fails> & more",
        "status": status,
        "impact": "major",
        "components": ["Checkout", "API"],
        "url": URL,
        "created_at": NOW.isoformat(),
    }
    update = {"id": "01JUPDATE", "status": status, "message": message, "created_at": NOW.isoformat(),
              "next_update_by": None}  # fmt: skip
    return {
        "event": "incident.update",
        "incident": incident,
        "update": update,
        "timeline": [update],
        "public_url": "https://status.example.com",
        "fallback": None,
        "audience": None,
    }


def write(root: Path, name: str, text: str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_an_update_renders_every_part_of_the_channel() -> None:
    message = render(channel("webhook", "blog"), "identified", context())
    assert set(message.parts) == {"title", "markdown", "html"}
    assert message.parts["title"] == "[Identified] Checkout <fails> & more"
    assert "**Identified** · impact: major · Affected: Checkout, API" in message.parts["markdown"]
    assert URL in message.parts["markdown"]


def test_html_is_escaped_and_text_is_not() -> None:
    message = render(channel("webhook", "blog"), "identified", context())
    assert "<h2>Checkout &lt;fails&gt; &amp; more</h2>" in message.parts["html"]
    assert "<p>Payments fail &lt;b&gt;sometimes&lt;/b&gt; &amp; retry.</p>" in message.parts["html"]
    assert "Payments fail <b>sometimes</b> & retry." in message.parts["markdown"]


def test_a_status_with_templates_of_its_own_uses_them_and_the_rest_come_from_default() -> None:
    """The email channel has a ``resolved`` subject; its body is the default one."""
    email = channel("email", "customers")
    resolved = render(email, "resolved", context("resolved", "Fixed."))
    assert resolved.parts["subject"] == "[Resolved] Checkout <fails> & more"
    assert "Fixed." in resolved.parts["text"]
    identified = render(email, "identified", context())
    assert identified.parts["subject"] == "[Identified] Checkout <fails> & more"


def test_the_templates_dir_setting_overrides_one_template_and_keeps_the_others(tmp_path: Path) -> None:
    write(tmp_path, "webhook/default/title.txt.j2", "{{ incident.title | upper }} ({{ channel }})\n")
    message = render(channel("webhook", "blog"), "identified", context(), str(tmp_path))
    assert message.parts["title"] == "CHECKOUT <FAILS> & MORE (blog)"
    assert "**Identified**" in message.parts["markdown"]


def test_macros_imported_by_an_html_template_escape_once(tmp_path: Path) -> None:
    """A shared macro's output is escaped in HTML (once: no ``&amp;lt;``) and left as it is in text."""
    write(tmp_path, "_shared/words.j2", "{% macro quoted(text) %}«{{ text }}»{% endmacro %}\n")
    body = '{% from "_shared/words.j2" import quoted %}{{ quoted(update.message) }}\n'
    for part in ("body.md", "body.html"):
        write(tmp_path, f"webhook/default/{part}.j2", body)
    message = render(channel("webhook", "blog"), "identified", context(message="<b>&</b>"), str(tmp_path))
    assert message.parts["markdown"] == "«<b>&</b>»"
    assert message.parts["html"] == "«&lt;b&gt;&amp;&lt;/b&gt;»"


def test_an_undefined_variable_names_the_template_and_its_line(tmp_path: Path) -> None:
    write(tmp_path, "webhook/default/title.txt.j2", "[{{ update.status }}]\n{{ incident.severity }}\n")
    with pytest.raises(RenderError) as caught:
        render(channel("webhook", "blog"), "identified", context(), str(tmp_path))
    error = "template webhook/default/title.txt.j2, line 2: 'dict object' has no attribute 'severity'"
    assert str(caught.value) == error


def test_a_syntax_error_names_the_template_and_its_line(tmp_path: Path) -> None:
    write(tmp_path, "webhook/identified/body.html.j2", "<p>\n{% fi update.message %}\n</p>\n")
    with pytest.raises(RenderError) as caught:
        render(channel("webhook", "blog"), "identified", context(), str(tmp_path))
    assert str(caught.value) == "template webhook/identified/body.html.j2, line 2: Encountered unknown tag 'fi'."
