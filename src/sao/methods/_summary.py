"""The per-layer report of :func:`sao.sparsify`: what each weight layer became, and why.

``sparsify(..., return_summary=True)`` returns it beside the model, ``verbose=True`` prints it.
Every weight layer of the model is a row (see :mod:`sao.methods._layers`), sparsified or not:

- ``"applied"``: the method built the layer at the target (up to the rounding of a kept
  count, or EOI's few extra non-zeros);
- ``"nearest"``: the layer cannot take the target exactly and got the nearest achievable
  degree/sparsity (only with ``strict=False``);
- ``"off-target"``: the method ran, but the layer's measured sparsity is further from what it
  planned than the method's rounding (one connection; EOI's extra non-zeros; for GMP the
  global figure), e.g. a masked layer pruned again by a ``-t`` method keeps its sparser mask;
  the reason gives the figures;
- ``"excluded"``: kept dense by ``exclude`` (first/last layer by default) or by design (the
  non-ECO layers of an ECO model);
- ``"skipped"``: left as it is because it cannot be replaced (a kind sao does not sparsify, a
  layer already sparse or pruned with :mod:`torch.nn.utils.prune`, subclass, grouped
  convolution, shared Parameter, or a layer this method cannot build); the reason says which.

Every ``"nearest"``, ``"off-target"`` and ``"skipped"`` row is counted in the one warning
:func:`sao.sparsify` emits (:meth:`SparsifySummary.warning`).

The sparsity of a row is measured on the layer now in the model, from its connection mask
(:func:`sao.methods.connection_mask`: whole kernels for convolutions), never copied from the
request. The overall figures weight each sparsified layer by its number of connections.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["STATUSES", "LayerReport", "SparsifySummary"]

STATUSES = ("applied", "nearest", "off-target", "excluded", "skipped")
_SPARSIFIED = ("applied", "nearest", "off-target")
_SHORT_LIST = 160  # characters: a longer exclude=[...] list is described, not printed


@dataclass(frozen=True)
class LayerReport:
    """One weight layer in a :class:`SparsifySummary`.

    Attributes:
        name: the layer's (first) name in the model.
        kind: class name of the layer before ``sparsify`` (``"Linear"``, ``"Conv2d"``, ``"ECOConv2d"``, …).
        shape: its weight shape, ``(out, in)`` or ``(out, in // groups, kh, kw)`` (the inner
            ``(C, C, k, k)`` of an ECO layer).
        method: the method that built it; ``None`` for excluded and skipped layers.
        degree: the SAO degree it got (SAO/RG topologies, or the degree a pruning sparsity was
            derived from); ``None`` where no degree applies.
        target: the sparsity asked of it (the requested one, or ``1 - degree / max(out, in)``
            for a requested degree); ``None`` for excluded and skipped layers.
        sparsity: measured fraction of absent connections of the layer now in the model
            (``None`` if the layer has no connection mask, e.g. a custom method's module).
        status: one of :data:`STATUSES`.
        reason: why it is excluded, skipped or nearest, or how to read the row.
        connections: ``out · in`` (kernels, for convolutions), the weight in the overall figures.
        aliases: further names of a tied layer (the same module placed there too).
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    method: str | None
    degree: int | None
    target: float | None
    sparsity: float | None
    status: str
    reason: str = ""
    connections: int = 0
    aliases: tuple[str, ...] = ()

    @property
    def deviation(self) -> float | None:
        """``sparsity - target`` (``None`` unless both are known)."""
        return None if self.sparsity is None or self.target is None else self.sparsity - self.target


def _weighted(rows: list[LayerReport], field: str) -> float | None:
    values = [getattr(r, field) for r in rows]
    total = sum(r.connections for r in rows)
    if not rows or total == 0 or any(v is None for v in values):
        return None
    return sum(v * r.connections for v, r in zip(values, rows, strict=True)) / total


def _cell(value: object) -> str:
    if value is None or value == ():
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, tuple):
        return "x".join(str(v) for v in value)
    return str(value)


@dataclass(frozen=True)
class SparsifySummary:
    """What :func:`sao.sparsify` did to every weight layer of a model.

    Attributes:
        method: the method name.
        request: the request as given, e.g. ``"sparsity=0.9"`` or ``"degree=4"`` (empty if none).
        strict: whether exact targets were required.
        layers: one :class:`LayerReport` per weight layer, in ``named_modules`` order.
    """

    method: str
    request: str
    strict: bool
    layers: tuple[LayerReport, ...]

    @property
    def sparsified(self) -> tuple[LayerReport, ...]:
        """The rows the method built (``"applied"``, ``"nearest"`` or ``"off-target"``)."""
        return tuple(r for r in self.layers if r.status in _SPARSIFIED)

    @property
    def skipped(self) -> tuple[LayerReport, ...]:
        """The rows left dense because they could not be replaced."""
        return tuple(r for r in self.layers if r.status == "skipped")

    @property
    def nearest(self) -> tuple[LayerReport, ...]:
        """The rows that took the nearest achievable degree/sparsity instead of the target."""
        return tuple(r for r in self.layers if r.status == "nearest")

    @property
    def off_target(self) -> tuple[LayerReport, ...]:
        """The rows the method built that are further from its plan than its rounding (module docstring)."""
        return tuple(r for r in self.layers if r.status == "off-target")

    def exclude_list(self) -> list[str]:
        """The ``exclude=`` names that keep dense what is dense now: the excluded and the skipped layers.

        A list of names keeps exactly those layers dense and replaces the default
        ``"first_last"``, so it holds the excluded (first/last) layers too; passing it gives the
        same model without the warning about skipped layers.
        """
        return [r.name for r in self.layers if r.status in ("excluded", "skipped")]

    @property
    def sparsity(self) -> float | None:
        """Achieved sparsity of the sparsified layers together, weighted by their connections."""
        return _weighted(list(self.sparsified), "sparsity")

    @property
    def target(self) -> float | None:
        """The target of the sparsified layers together, weighted the same way."""
        return _weighted(list(self.sparsified), "target")

    def warning(self) -> str | None:
        """The one-paragraph warning :func:`sao.sparsify` emits, or ``None`` if every layer met its target."""
        parts = []
        if self.nearest:
            worst = max(self.nearest, key=lambda r: abs(r.deviation or 0.0))
            parts.append(f"{len(self.nearest)} of {len(self.sparsified)} sparsified layers cannot take "
                         f"{self.request} exactly and took the nearest achievable sparsity (largest deviation "
                         f"{abs(worst.deviation or 0.0):.4f}: {worst.name!r} got {_cell(worst.sparsity)} for "
                         f"{_cell(worst.target)}); overall {_cell(self.sparsity)} for {_cell(self.target)}")
        if self.off_target:
            first = self.off_target[0]
            parts.append(f"{len(self.off_target)} of {len(self.sparsified)} sparsified layers are off their target "
                         f"by more than the method's rounding, e.g. {first.name!r} got {_cell(first.sparsity)} for "
                         f"{_cell(first.target)}: {first.reason}")
        if self.skipped:
            first = self.skipped[0]
            keep = f"exclude={self.exclude_list()!r}"
            if len(keep) > _SHORT_LIST:
                keep = ("exclude=summary.exclude_list() (with return_summary=True), the names of the rows now "
                        "'excluded' or 'skipped'")
            parts.append(f"{len(self.skipped)} layer(s) were skipped and left as they are, e.g. {first.name!r}: "
                         f"{first.reason}; to leave them out without this warning pass {keep} (a list keeps "
                         "exactly the layers it names dense and replaces the default exclude='first_last', so this "
                         "one names the first and last layers too)")
        if not parts:
            return None
        return (f"sparsify(method={self.method!r}): " + "; ".join(parts) + ". See the per-layer table with "
                "sparsify(..., verbose=True) or sparsify(..., return_summary=True); pass strict=True to get an "
                "error instead (subclasses of nn.Linear/nn.Conv2d are skipped either way).")

    def __str__(self) -> str:
        header = ("layer", "kind", "shape", "method", "degree", "target", "sparsity", "status", "reason")
        cells = [header]
        for r in self.layers:
            name = r.name + (f" (= {', '.join(r.aliases)})" if r.aliases else "")
            cells.append((name, r.kind, _cell(r.shape), _cell(r.method), _cell(r.degree), _cell(r.target),
                          _cell(r.sparsity), r.status, r.reason))
        widths = [max(len(row[i]) for row in cells) for i in range(len(header) - 1)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
                 for row in cells]
        tally = {s: sum(r.status == s for r in self.layers) for s in STATUSES}
        counts = ", ".join(f"{n} {s}" for s, n in tally.items() if n or s != "off-target")  # off-target: a fault
        strict = ", strict" if self.strict else ""
        total = sum(r.connections for r in self.sparsified)
        title = (f"sparsify(method={self.method!r}{', ' + self.request if self.request else ''}{strict}): "
                 f"{len(self.layers)} weight layers ({counts})")
        overall = (f"sparsified layers: sparsity {_cell(self.sparsity)} (target {_cell(self.target)}) over "
                   f"{total:,} connections" if self.sparsified else "no layer was sparsified")
        return "\n".join([title, *[line.rstrip() for line in lines], overall])
