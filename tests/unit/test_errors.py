"""Errors carry the field they are about (broadcaster.core.errors), and the HTTP API reads it, not the message."""

from __future__ import annotations

from typing import Annotated

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from broadcaster.core.errors import ConfigError, InputError, field_and_message
from broadcaster.core.limits import checked
from broadcaster.domain.broadcasts import parse_request
from broadcaster.interfaces.api.problems import input_problem


class Inner(BaseModel):
    url: str


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    components: list[Annotated[str, Field(max_length=3)]] = []
    inner: Inner | None = None
    name: str = "x"

    @field_validator("name")
    @classmethod
    def _named(cls, value: str) -> str:
        if value.startswith("name."):
            raise ValueError(f"{value} is named by its own, deeper key")
        raise ValueError("must not be set")


def refusal(**fields: object) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        Body.model_validate(fields)
    return caught.value


def test_a_validation_error_becomes_one_line_naming_its_field() -> None:
    error = InputError.from_validation(refusal(components=["long"]))
    assert str(error) == "components.0: String should have at most 3 characters"
    assert error.field == "components.0"


def test_a_validators_message_loses_pydantics_prefix() -> None:
    error = InputError.from_validation(refusal(name="y"))
    assert (str(error), error.field) == ("name: must not be set", "name")


def test_a_message_that_names_a_deeper_field_is_kept_as_it_is() -> None:
    error = InputError.from_validation(refusal(name="name.sub"))
    assert str(error) == "name.sub is named by its own, deeper key"


def test_the_subclass_and_prefix_are_kept() -> None:
    error = ConfigError.from_validation(refusal(inner={}), prefix="configuration error: f.toml: ")
    assert isinstance(error, ConfigError)
    assert str(error) == "configuration error: f.toml: inner.url: Field required"
    assert error.field == "inner.url"


def test_field_and_message_skips_the_location_prefix() -> None:
    error = {"loc": ("body", "components", 0), "msg": "Value error, too long"}
    assert field_and_message(error, 1) == ("components.0", "too long")
    assert field_and_message({"loc": (), "msg": "m"}) == ("", "m")


def test_an_update_request_names_its_field() -> None:
    with pytest.raises(InputError) as caught:
        parse_request({"title": "T", "status": "investigating", "message": "a\x1bb"})
    assert caught.value.field == "message"
    assert str(caught.value).startswith("message: contains a control character (U+001B)")
    with pytest.raises(InputError) as caught:
        parse_request({"status": "investigating", "message": "m"})
    assert caught.value.field is None


def test_checked_names_its_field() -> None:
    with pytest.raises(InputError) as caught:
        checked("--title", "a\nb")
    assert caught.value.field == "--title"
    assert str(caught.value).startswith("--title: contains a line break")


def test_the_api_problem_names_the_errors_field_whatever_its_message() -> None:
    """The field comes from ``InputError.field``: a message is not parsed for one."""
    named = input_problem(InputError("components: at most 100", field="components")).body
    assert named.detail == "components: at most 100"
    assert [(e.field, e.location, e.message) for e in named.errors or []] == [("components", "body", "at most 100")]
    unnamed = input_problem(InputError("unknown channel 'x'", field="channels")).body
    assert unnamed.detail == "channels: unknown channel 'x'"
    assert [e.message for e in unnamed.errors or []] == ["unknown channel 'x'"]
    plain = input_problem(InputError("looks_like_a_field: but is not one")).body
    assert (plain.detail, plain.errors) == ("looks_like_a_field: but is not one", [])
