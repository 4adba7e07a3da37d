"""Strict, typed configuration: every file is a pydantic model that refuses unknown keys at every level.

A bad file fails at load with the path of each bad field and the reason (``ConfigError``), before any
work starts. ``commented_yaml`` writes a loaded model back as YAML, every field with its description
(``pricer show-params``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from pricer.core.errors import ConfigError


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


M = TypeVar("M", bound=BaseModel)


def _describe(error: ValidationError, origin: str, prefix: str) -> str:
    lines = [f"invalid configuration in {origin}:"]
    for item in error.errors():
        where = ".".join([*filter(None, [prefix]), *(str(part) for part in item["loc"])]) or "(top level)"
        lines.append(f"  {where}: {item['msg']}")
    return "\n".join(lines)


def validate(model: type[M] | TypeAdapter, data: Any, origin: str = "<config>", prefix: str = "") -> Any:
    """``data`` as ``model`` (a pydantic model, or a TypeAdapter of a union); ConfigError names bad fields
    (each under ``prefix``, the section the data came from)."""
    try:
        if isinstance(model, TypeAdapter):
            return model.validate_python(data)
        return model.model_validate({} if data is None else data)
    except ValidationError as error:
        raise ConfigError(_describe(error, origin, prefix)) from None


def _yaml_problem(error: yaml.YAMLError) -> str:
    """PyYAML's several-line message as one line: what is wrong, and where."""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    mark = getattr(error, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    context = getattr(error, "context", None)
    return f"{problem}{where}" + (f" ({context})" if context else "")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping; a missing file, bad YAML or another shape is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"configuration file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {_yaml_problem(error)}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data or {}


def load_config(model: type[M], path: str | Path) -> M:
    return validate(model, load_yaml(path), str(path))


def load_sections(path: str | Path, known: tuple[str, ...], **sections: type[BaseModel]) -> dict[str, Any]:
    """Some top-level sections of a file, each validated as its model; a top-level key that is not one
    of ``known`` is refused, so a typo fails even in a section this caller does not read."""
    data = load_yaml(path)
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"invalid configuration in {path}: unknown top-level key(s) {', '.join(unknown)} "
                          f"(known: {', '.join(known)})")
    return {name: validate(model, data.get(name), str(path), name) for name, model in sections.items()}


def commented_yaml(model: BaseModel, indent: int = 0) -> list[str]:
    """Every setting of ``model`` as YAML lines, defaults filled in, each with its field's description."""
    lines: list[str] = []
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        # A ``kind`` says what the whole section is: its model's docstring describes it.
        comment = field.description or (_first_line(type(model).__doc__) if name == "kind" else "")
        if isinstance(value, BaseModel):
            lines.append(_commented(f"{'  ' * indent}{name}:", comment or _first_line(value.__doc__)))
            lines += commented_yaml(value, indent + 1)
        elif isinstance(value, list) and value and all(isinstance(item, BaseModel) for item in value):
            lines.append(_commented(f"{'  ' * indent}{name}:", comment))
            for item in value:
                inner = commented_yaml(item, indent + 2)
                lines.append(f"{'  ' * (indent + 1)}- {inner[0].lstrip()}")
                lines += inner[1:]
        else:
            lines.append(_commented(f"{'  ' * indent}{name}: {json.dumps(value, default=str)}", comment))
    return lines


def _first_line(text: str | None) -> str:
    """The first sentence of a docstring, on one line."""
    paragraph = " ".join((text or "").strip().split("\n\n")[0].split())
    return paragraph.split(". ")[0].rstrip(".")


def _commented(line: str, comment: str) -> str:
    return f"{line:<52} # {comment}" if comment else line
