"""Command-line flags generated from the run-config dataclasses, so every default exists once.

Each field of :class:`~sao.experiments.ModelConfig`, :class:`~sao.experiments.MethodConfig`,
:class:`~sao.experiments.DataConfig` and :class:`~sao.training.TrainConfig` becomes one flag
(``--weight-decay``; a field's ``metadata["flag"]`` renames it, e.g. ``--model``), with its
``metadata["help"]``, its type, and the registry's names as ``choices``. Every flag defaults to
``None`` (= not given), so :func:`apply_flags` changes only what the user typed and the rest keeps
the defaults of the dataclasses or of the experiment the run belongs to.

Values are checked in two steps, both reported as an argument error naming the flag: each value
alone by its type (:mod:`sao.cli._types`: integers within 64 bits, finite numbers, seeds), and
the config it builds by the dataclasses themselves, their errors blamed on the flags that cause
them (:func:`sao.cli._types.blame`) — so a field added to a config is checked with no code here.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

import torch

from sao.cli._types import SEED, Folder, Integer, Real, blame
from sao.data import NORMALIZATIONS, list_datasets
from sao.experiments import DataConfig, MethodConfig, ModelConfig, RunConfig
from sao.methods import METHODS
from sao.models import MODELS
from sao.training import SCHEDULES, TrainConfig, resolve_device
from sao.training.config import AMP_DTYPES

__all__ = ["SECTIONS", "add_config_flags", "apply_flags", "check_device", "flag_name", "given"]

#: Part of :class:`RunConfig` → its dataclass.
SECTIONS: dict[str, type] = {"model": ModelConfig, "method": MethodConfig, "data": DataConfig, "train": TrainConfig}

#: Fields whose values are names in a registry: ``(section, field) → choices``.
_CHOICES: dict[tuple[str, str], Callable[[], list[str]]] = {
    ("model", "name"): MODELS.names, ("method", "name"): METHODS.names, ("data", "name"): list_datasets,
    ("data", "normalize"): lambda: list(NORMALIZATIONS),
    ("train", "schedule"): SCHEDULES.names, ("train", "amp"): lambda: list(AMP_DTYPES),
    ("model", "activation"): lambda: sorted({a for n in MODELS for a in MODELS.get(n).activations}),
    ("model", "head"): lambda: sorted({h for n in MODELS for h in MODELS.get(n).heads}),
}


#: The value type of a field's annotation (others: the annotation itself, e.g. ``str``).
_TYPES: dict[Any, Callable[[str], Any]] = {int: Integer(), float: Real()}

#: Fields whose values need a narrower type than their annotation's: ``(section, field) → type``.
def _folder_name(text: str) -> str:
    """A config field holding a folder's name (``--data-root``): a folder, or none yet, never a file."""
    return str(Folder()(text))


_NARROWER: dict[tuple[str, str], Callable[[str], Any]] = {("train", "seed"): SEED, ("data", "root"): _folder_name}


def _flag(field: dataclasses.Field) -> str:
    return field.metadata.get("flag", "--" + field.name.replace("_", "-"))


def flag_name(key: str) -> str:
    """The flag of config field ``key`` (``"section.field"``), e.g. ``"train.batch_size"`` → ``"--batch-size"``."""
    section, name = key.split(".")
    return _flag(next(f for f in dataclasses.fields(SECTIONS[section]) if f.name == name))


def _base_type(hint: Any) -> tuple[Any, bool]:
    """``(type, is_sequence)`` of a field's annotation, with ``None`` stripped from unions."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(hint) is tuple:
        return typing.get_args(hint)[0], True
    return hint, False


def add_config_flags(parser: argparse.ArgumentParser, *, only: Iterable[str] | None = None,
                     defaults: RunConfig | None = None, note: str = "") -> None:
    """Add one flag per config field (``only``: the ``section.field`` names to add, default all).

    The help shows each field's value in ``defaults`` (default: the dataclasses' defaults);
    ``note`` heads each group (e.g. where the defaults come from).
    """
    only = None if only is None else set(only)
    shown = defaults or RunConfig()
    for section, kind in SECTIONS.items():
        hints = typing.get_type_hints(kind)
        fields = [f for f in dataclasses.fields(kind) if f.init and (only is None or f"{section}.{f.name}" in only)]
        if not fields:
            continue
        group = parser.add_argument_group(f"{section} settings", note or None)
        note = ""  # once, above the first group
        for field in fields:
            _add(group, field, f"{section}.{field.name}", hints[field.name], getattr(getattr(shown, section),
                                                                                      field.name))


def _add(group: Any, field: dataclasses.Field, key: str, hint: Any, default: Any) -> None:
    kind, sequence = _base_type(hint)
    text = field.metadata.get("help", field.name.replace("_", " "))
    if default is not None:
        text += f" (default: {' '.join(map(str, default)) if isinstance(default, tuple) else default})"
    options: dict[str, Any] = {"dest": key, "default": None, "help": text.replace("%", "%%")}
    if kind is bool:
        options["action"] = argparse.BooleanOptionalAction
    else:
        options["type"] = _NARROWER.get(tuple(key.split(".")), _TYPES.get(kind, kind))
        options["metavar"] = field.name.upper()
        if sequence:
            options["nargs"] = "+"
    section, name = key.split(".")
    if (section, name) in _CHOICES:
        options["choices"] = _CHOICES[section, name]()
        options.pop("metavar", None)
    group.add_argument(_flag(field), **options)


def apply_flags(config: RunConfig, args: argparse.Namespace) -> RunConfig:
    """``config`` with every flag the user gave (not ``None``) written into its field.

    Raises:
        ValueError: the config the flags make is invalid; the error names the flags to blame.
    """
    values = {key: getattr(args, key) for key in _keys() if given(args, key)}
    return blame(lambda chosen: _applied(config, chosen), values, flag_name)


def _keys() -> list[str]:
    return [f"{section}.{f.name}" for section, kind in SECTIONS.items() for f in dataclasses.fields(kind) if f.init]


def _applied(config: RunConfig, values: dict[str, Any]) -> RunConfig:
    """``config`` with ``values`` (``"section.field"`` → value) written into its fields."""
    parts = {}
    for section in SECTIONS:
        chosen = {key.split(".")[1]: value for key, value in values.items() if key.split(".")[0] == section}
        if section == "method":
            chosen = _target(chosen)
        part = getattr(config, section)
        parts[section] = dataclasses.replace(part, **chosen) if chosen else part
    return dataclasses.replace(config, **parts)


def _target(chosen: dict[str, Any]) -> dict[str, Any]:
    """The method fields to change: a target given replaces the other; a method that takes none drops the base's."""
    if chosen.keys() & {"degree", "sparsity"}:
        return {"degree": None, "sparsity": None, **chosen}
    if "name" in chosen and not METHODS.get(chosen["name"]).needs_target:
        return {**chosen, "degree": None, "sparsity": None}
    return chosen


def check_device(device: str) -> None:
    """Refuse a device this machine does not have (``ValueError``), before anything runs."""
    resolved = resolve_device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r}: this machine has no CUDA device (use --device auto or cpu)")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ValueError(f"device={device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def given(args: argparse.Namespace, key: str) -> bool:
    """Whether the user gave the flag of ``section.field`` ``key``."""
    return getattr(args, key, None) is not None
