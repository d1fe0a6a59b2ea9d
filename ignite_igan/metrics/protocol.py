"""The protocol card of a sample-quality number, and the TF32 switch around a metric's network.

An Inception Score or FID is only comparable with another one computed by the same protocol: the same network and
weights, the same resize, the same input range and rounding, the same number of samples and splits, the same
precision and, for FID, the same real statistics. :class:`Protocol` records all of it. Every
:class:`~ignite_igan.metrics.InceptionScore` and :class:`~ignite_igan.metrics.FID` has one (``metric.protocol``)
and, when attached to an engine under ``name``, publishes it beside its number in ``engine.state.protocols[name]``
(``engine.state.metrics`` stays plain floats). Two cards are equal exactly when every field is, and each card's
one-line string ends with a short hash of all fields, so two numbers computed differently are easy to tell apart.

:func:`tf32_mode` runs a block with TensorFloat-32 matmuls and convolutions allowed or not, and restores the
previous flags afterwards; the metrics run their network inside ``tf32_mode(allow_tf32)`` with ``allow_tf32=False``
by default, because the reference ran in full float32 and TF32 changes the logits.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from typing import Mapping, Any, Dict, Iterator, Optional, Tuple

import torch

from ignite.engine import Engine

from ignite_igan.validation import check_bool, check_instance

__all__ = ["ROUNDING", "Protocol", "tf32_mode", "publish_protocol", "published_protocols"]

#: How float images become the uint8 the networks see (:func:`~ignite_igan.metrics.to_uint8`).
ROUNDING = "round to nearest (half to even) to uint8"


@dataclasses.dataclass(frozen=True)
class Protocol:
    """Everything that decides the value of a sample-quality number, as a small immutable record.

    Attributes:
        metric: ``"inception_score"`` or ``"fid"``.
        network: the extractor, e.g. ``"TFInceptionV3 (torch-fidelity inception-v3-compat, TF 2015-12-05)"``.
        weights_sha256: SHA-256 of its weights file (for a user classifier: of its ``state_dict`` tensors).
        output: what the metric uses, e.g. ``"softmax over 1008 logits without bias"`` or ``"2048 pool_3
            features"``.
        resize: how images are resized before the network (``"none"`` if they are not).
        input_range: the declared range of the metric's images (``"[-1,1]"``, ``"[0,1]"`` or ``"uint8"``).
        rounding: how float images are quantized to uint8 (:data:`ROUNDING`).
        dtype: the network's dtype (``"float32"`` or ``"float64"``).
        allow_tf32: whether TF32 matmuls/convolutions were allowed during the network's pass (GPU only).
        n_samples: number of scored samples (``None`` before the first ``compute``).
        splits: Inception Score: number of splits.
        split_order: Inception Score: ``"contiguous, in sample order"`` or ``"contiguous, after a seeded
            shuffle"``.
        shuffle_seed: Inception Score: the shuffle's seed when shuffled.
        real_statistics: FID: where the real statistics come from and the key of their cache, e.g.
            ``"cifar10/train, 50000 images, key 3f2a9c1b7d4e"``.

    Example:
        >>> card = Protocol(metric="fid", network="MyNet", weights_sha256="ab" * 32, output="64 features",
        ...                 resize="none", input_range="[0,1]", n_samples=1000)
        >>> card.to_dict()["n_samples"]
        1000
        >>> card == dataclasses.replace(card, n_samples=2000)
        False
        >>> str(card).startswith("fid | MyNet weights abababababab | 64 features | resize none")
        True
    """

    metric: str
    network: str
    weights_sha256: Optional[str]
    output: str
    resize: str
    input_range: str
    rounding: str = ROUNDING
    dtype: str = "float32"
    allow_tf32: bool = False
    n_samples: Optional[int] = None
    splits: Optional[int] = None
    split_order: Optional[str] = None
    shuffle_seed: Optional[int] = None
    real_statistics: Optional[str] = None

    @classmethod
    def of_network(cls, metric: str, network: Mapping[str, Any], **fields: Any) -> "Protocol":
        """A card whose network fields (name, weights, resize, dtype) come from an extractor's ``describe()``."""
        return cls(metric=metric, network=network["network"], weights_sha256=network["weights_sha256"],
                   resize=network["resize"], dtype=network["dtype"], **fields)

    def to_dict(self) -> Dict[str, Any]:
        """All fields as a JSON-serializable dict (field order kept)."""
        return dataclasses.asdict(self)

    @property
    def digest(self) -> str:
        """The first 12 hex digits of the SHA-256 of all fields (equal cards, equal digests)."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]

    def differences(self, other: "Protocol") -> Dict[str, Tuple[Any, Any]]:
        """``{field: (this value, other value)}`` for every field in which the two cards differ."""
        check_instance("other", other, Protocol, "a Protocol")
        mine, theirs = self.to_dict(), other.to_dict()
        return {key: (mine[key], theirs[key]) for key in mine if mine[key] != theirs[key]}

    def __str__(self) -> str:
        weights = f" weights {self.weights_sha256[:12]}" if self.weights_sha256 else " weights unknown"
        parts = [
            self.metric,
            f"{self.network}{weights}",
            self.output,
            f"resize {self.resize}",
            f"input {self.input_range}, {self.rounding}",
            f"{self.dtype}, TF32 {'allowed' if self.allow_tf32 else 'off'}",
            f"n={self.n_samples if self.n_samples is not None else '?'}",
        ]
        if self.splits is not None:
            order = self.split_order or "contiguous"
            seed = f", seed {self.shuffle_seed}" if self.shuffle_seed is not None else ""
            parts.append(f"{self.splits} splits ({order}{seed})")
        if self.real_statistics is not None:
            parts.append(f"real: {self.real_statistics}")
        parts.append(f"card {self.digest}")
        return " | ".join(parts)

    def to_markdown(self) -> str:
        """The card as a Markdown table (what TensorBoard's text tab shows), with the one-line form on top."""
        rows = [f"`{self}`", "", "| field | value |", "|---|---|"]
        for key, value in self.to_dict().items():
            rows.append(f"| {key} | {'' if value is None else value} |")
        rows.append(f"| digest | {self.digest} |")
        return "\n".join(rows)


def publish_protocol(engine: Engine, name: str, protocol: Protocol) -> None:
    """Puts ``protocol`` into ``engine.state.protocols[name]`` (creating the dict on first use)."""
    if not isinstance(getattr(engine.state, "protocols", None), dict):
        engine.state.protocols = {}
    engine.state.protocols[name] = protocol


def published_protocols(engine: Engine) -> Dict[str, Protocol]:
    """The cards the engine's metrics published: ``{metric name: Protocol}`` (empty before the first run)."""
    protocols = getattr(engine.state, "protocols", None)
    return dict(protocols) if isinstance(protocols, dict) else {}


def _matmul_precision() -> Optional[str]:
    try:
        return torch.get_float32_matmul_precision()
    except RuntimeError:  # a mix of the legacy and the fp32_precision APIs that PyTorch refuses to summarize
        return None


@contextlib.contextmanager
def tf32_mode(allow: bool) -> Iterator[None]:
    """Sets ``torch.backends.cuda.matmul.allow_tf32`` and ``torch.backends.cudnn.allow_tf32`` to ``allow`` for the
    block, and restores both (and ``torch.get_float32_matmul_precision()``) afterwards, also on error.

    TF32 (Ampere and later GPUs) rounds the inputs of float32 matmuls and convolutions to 10 mantissa bits. That is
    fine for training, but it changes an Inception network's logits and features, so the paper-protocol metrics run
    their network with ``allow=False`` unless told otherwise. On a CPU the flags change nothing.

    If the process set its flags with PyTorch's newer ``fp32_precision`` API in a way the ``allow_tf32`` getters
    refuse to read, the same is done through that API (``cuda.matmul``, ``cudnn.conv`` and ``cudnn.rnn``).

    Args:
        allow: allow TF32 inside the block.

    Example:
        >>> import torch
        >>> before = torch.backends.cudnn.allow_tf32
        >>> with tf32_mode(False):
        ...     torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        (False, False)
        >>> torch.backends.cudnn.allow_tf32 == before
        True
    """
    allow = check_bool("allow_tf32", allow)
    try:
        saved = (bool(torch.backends.cuda.matmul.allow_tf32), bool(torch.backends.cudnn.allow_tf32))
    except RuntimeError:
        # The flags were set with the fp32_precision API in a combination the legacy getters refuse to read;
        # mixing the two APIs makes PyTorch raise, so stay with the new one.
        with _tf32_mode_new_api(allow):
            yield
        return
    precision = _matmul_precision()
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allow
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
        # allow_tf32=True means "high"; a "medium" (bfloat16) setting comes back only through its own setter,
        # which is called only then, so that a process using the legacy flags alone never sees the newer API.
        if precision is not None and _matmul_precision() != precision:
            torch.set_float32_matmul_precision(precision)


@contextlib.contextmanager
def _tf32_mode_new_api(allow: bool) -> Iterator[None]:
    backends = [torch.backends.cuda.matmul, torch.backends.cudnn.conv, torch.backends.cudnn.rnn]
    saved = [backend.fp32_precision for backend in backends]
    try:
        for backend in backends:
            backend.fp32_precision = "tf32" if allow else "ieee"
        yield
    finally:
        for backend, value in zip(backends, saved):
            backend.fp32_precision = value
