"""Parameter types the flows expose in the Prefect UI form, and how to read them.

`flow_parameters` reads a flow's parameters (name, type, default, the docstring's line
for it) the way Prefect builds its UI form from them; the deployments check their default
parameters with it and `labelhaul sync` generates its options from it, so a parameter
added to a flow is a deployment parameter and a CLI flag with no second list to update.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import enum
import inspect
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from labelhaul.export_params import WorkflowStatus
from labelhaul.sync.plan import SyncMode

__all__ = ["FlowParameter", "SyncMode", "WorkflowStatus", "flow_parameters"]


@dataclass(frozen=True)
class FlowParameter:
    """One parameter of a flow, as its signature and docstring declare it.

    Attributes:
        name: the parameter's name.
        annotation: its type, `X | None` and `Annotated[X, ...]` as written; a string when
            the annotation cannot be evaluated (a name only imported for type checking).
        default: its default, `inspect.Parameter.empty` when it is required.
        doc: its description in the docstring's `Args:` section ("" when it has none).
    """

    name: str
    annotation: Any
    default: Any
    doc: str

    @property
    def required(self) -> bool:
        """Return True when a run must give this parameter."""
        return self.default is inspect.Parameter.empty

    @property
    def optional(self) -> bool:
        """Return True when None is one of the values the parameter takes."""
        return type(None) in typing.get_args(_strip_annotated(self.annotation)[0])

    @property
    def value_type(self) -> Any:
        """Return the type of a value, without `| None` and without `Annotated` metadata."""
        base = _strip_annotated(self.annotation)[0]
        if isinstance(base, types.UnionType) or typing.get_origin(base) is typing.Union:
            rest = [arg for arg in typing.get_args(base) if arg is not type(None)]
            if len(rest) == 1:
                return _strip_annotated(rest[0])[0]
        return base

    @property
    def metadata(self) -> tuple[Any, ...]:
        """Return the `Annotated` metadata of the type (constraints such as `Ge(0)`)."""
        base, extras = _strip_annotated(self.annotation)
        if isinstance(base, types.UnionType) or typing.get_origin(base) is typing.Union:
            for arg in typing.get_args(base):
                extras += _strip_annotated(arg)[1]
        return extras

    @property
    def choices(self) -> list[str] | None:
        """Return the values of the parameter's enum type, None when it is not an enum."""
        kind = self.value_type
        if isinstance(kind, type) and issubclass(kind, enum.Enum):
            return [str(member.value) for member in kind]
        return None


def flow_parameters(flow: Callable[..., Any]) -> dict[str, FlowParameter]:
    """Return the parameters of a flow (or of a plain function), in signature order."""
    fn = getattr(flow, "fn", flow)
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except NameError:  # an annotation names a type-checking-only import: keep the strings
        hints = {}
    docs = _arg_docs(inspect.getdoc(fn) or "")
    return {
        name: FlowParameter(
            name=name,
            annotation=hints.get(name, parameter.annotation),
            default=parameter.default,
            doc=docs.get(name, ""),
        )
        for name, parameter in inspect.signature(fn).parameters.items()
    }


def _strip_annotated(annotation: Any) -> tuple[Any, tuple[Any, ...]]:
    if typing.get_origin(annotation) is typing.Annotated:
        return annotation.__origin__, tuple(annotation.__metadata__)
    return annotation, ()


_ARG_RE = re.compile(r"^(\w+)(?: \(.*\))?:\s*(.*)$")


def _arg_docs(docstring: str) -> dict[str, str]:
    """Return each parameter's description in a Google-style `Args:` section, joined."""
    docs: dict[str, str] = {}
    lines = docstring.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() in ("Args:", "Arguments:"))
    except StopIteration:
        return docs
    indent: int | None = None
    current: str | None = None
    for line in lines[start + 1 :]:
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        if indent is None:
            indent = depth
        if depth < indent:
            break  # the next section (Returns:, Raises:)
        match = _ARG_RE.match(line.strip()) if depth == indent else None
        if match:
            current = match.group(1)
            docs[current] = match.group(2)
        elif current is not None:
            docs[current] += " " + line.strip()
    return docs
