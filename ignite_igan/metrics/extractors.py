"""Networks that turn images into class logits (and pool features) for the sample-quality metrics.

Every extractor here takes a batch of **uint8** images ``(N, C, H, W)`` in [0, 255], the form a saved PNG has, and
returns float logits ``(N, K)``. :func:`to_uint8` is the one place where float images become uint8 (by rounding, not
truncation), so in-loop scores equal the scores of the same images written to disk.

- :class:`TFInceptionV3`: the TensorFlow Inception of 2015-12-05 that the paper used, through torch-fidelity's port
  (``inception-v3-compat``): its TensorFlow-1 bilinear resize to 299x299, ``(x - 128) / 128``, and the 1008 logits
  **without** the softmax bias (:ref:`ref-inception-score`). Weights are checked against a SHA-256 and loaded with
  ``torch.load(weights_only=True)``. ``dtype=torch.float64`` runs the whole network in float64.
- :class:`TorchvisionInceptionV3`: torchvision's ImageNet ``inception_v3`` (1000 classes). It gives lower scores
  than the paper's network (about 9.4-9.7 instead of 11.24 on CIFAR-10's training set) and is offered only for
  comparison with work that used it.
- :class:`ClassifierExtractor`: any classifier of your own (an MNIST or digits classifier, say) that returns logits.
"""
from __future__ import annotations

import functools
import hashlib
import os
import types
import weakref
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union
from unittest import mock
from urllib.error import URLError

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ignite.metrics import Metric

from ignite_igan.metrics.modes import evaluation_mode
from ignite_igan.metrics.protocol import Protocol, tf32_mode
from ignite_igan.validation import ArgumentTypeError, check_bool, check_choice, check_device, check_int

__all__ = [
    "INPUT_RANGES",
    "TF_INCEPTION_URL",
    "TF_INCEPTION_SHA256",
    "to_uint8",
    "sha256_of_file",
    "state_dict_sha256",
    "callable_fingerprint",
    "resolve_tf_inception_weights",
    "ImageExtractor",
    "TFInceptionV3",
    "TorchvisionInceptionV3",
    "ClassifierExtractor",
    "SharedPass",
]

#: Features function of :class:`ClassifierExtractor`: ``features_fn(classifier, x) -> (N, D)`` features, where
#: ``x`` are the images in the classifier's ``input_range`` (float) on its device.
FeaturesFn = Callable[[nn.Module, Tensor], Tensor]

#: The weights torch-fidelity downloads for ``inception-v3-compat`` (its release v0.2.0), the TensorFlow graph
#: ``inception-2015-12-05`` converted to a PyTorch state dict.
TF_INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
#: SHA-256 of that file (95,628,359 bytes). torch-fidelity itself does not check it; the file name carries its first
#: eight hex digits (``6726825d``) by torch.hub's naming convention, and the full digest is the one recorded for
#: this file by several independent public projects. Pass ``sha256=`` to use another file.
TF_INCEPTION_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"

#: Accepted values of ``input_range`` and what they mean.
INPUT_RANGES = {
    "[-1,1]": "floating point in [-1, 1] (a tanh generator); uint8 = round((x + 1) * 127.5)",
    "[0,1]": "floating point in [0, 1] (a sigmoid generator, ToTensor()); uint8 = round(x * 255)",
    "uint8": "torch.uint8 in [0, 255], used as is",
}

# Float images may overshoot their range by rounding error (e.g. 2 * x - 1); anything further out is a mistake.
_RANGE_TOLERANCE = 1e-4


def _normalize_range(input_range: str, argument: str = "input_range") -> str:
    key = input_range.replace(" ", "").lower() if isinstance(input_range, str) else None
    if key not in INPUT_RANGES:
        raise ArgumentTypeError(f"{argument} must be one of {list(INPUT_RANGES)}, got {input_range!r}")
    return key


def to_uint8(images: Tensor, input_range: str, argument: str = "images") -> Tensor:
    """Checks ``images`` against the declared ``input_range`` and converts them to uint8 by rounding.

    Args:
        images: a tensor of images (any shape); float for ``"[-1,1]"`` and ``"[0,1]"``, ``torch.uint8`` for
            ``"uint8"``.
        input_range: ``"[-1,1]"``, ``"[0,1]"`` or ``"uint8"`` (see :data:`INPUT_RANGES`).
        argument: the name used for ``images`` in error messages.

    Returns:
        A uint8 tensor of the same shape; float values are mapped to [0, 255] and rounded to the nearest integer
        (halves to even), so that 0.5/255 steps do not all fall one level short as truncation makes them. Values
        that overshoot the range by at most 1e-4 (rounding error) are clipped; anything further out is an error.

    Raises:
        TypeError: ``images`` is not a tensor or has the wrong dtype for ``input_range``.
        ValueError: NaN/inf values or values outside ``input_range``.

    Example:
        >>> import torch
        >>> to_uint8(torch.tensor([-1.0, 0.0, 0.999, 1.0]), "[-1,1]").tolist()
        [0, 128, 255, 255]
    """
    key = _normalize_range(input_range)
    wanted = "torch.uint8" if key == "uint8" else "floating point"
    is_uint8 = isinstance(images, Tensor) and images.dtype == torch.uint8
    if not isinstance(images, Tensor) or not (is_uint8 if key == "uint8" else images.is_floating_point()):
        got = images.dtype if isinstance(images, Tensor) else type(images).__name__
        raise TypeError(f"{argument} must be a torch.Tensor of {wanted} for input_range={input_range!r}, got {got} "
                        "(stack lists into one tensor; input_range='uint8' is for uint8 images)")
    if key == "uint8" or images.numel() == 0:
        return images if key == "uint8" else images.to(torch.uint8)
    images = images.detach()
    low, high = (-1.0, 1.0) if key == "[-1,1]" else (0.0, 1.0)
    got_min, got_max = float(images.min()), float(images.max())
    # NaN fails both comparisons, so NaN values are reported here too.
    if not (low - _RANGE_TOLERANCE <= got_min and got_max <= high + _RANGE_TOLERANCE):
        raise ValueError(f"{argument} must lie in [{low:g}, {high:g}] for input_range={input_range!r}, got values in "
                         f"[{got_min:.4g}, {got_max:.4g}]")
    # float64 so that (x + 1) * 127.5 is exact for every float32 input before rounding.
    scaled = images.to(torch.float64)
    scaled = (scaled + 1.0) * 127.5 if key == "[-1,1]" else scaled * 255.0
    return scaled.round().clamp_(0, 255).to(torch.uint8)


def _from_uint8(images: Tensor, input_range: str, dtype: torch.dtype) -> Tensor:
    """The inverse of :func:`to_uint8` up to quantization: uint8 back to floats in ``input_range`` (normalized)."""
    if input_range == "uint8":
        return images.to(dtype)
    x = images.to(dtype) / 255.0
    return x * 2.0 - 1.0 if input_range == "[-1,1]" else x


def sha256_of_file(path: Union[str, os.PathLike]) -> str:
    """The hex SHA-256 digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def state_dict_sha256(module: nn.Module) -> str:
    """The hex SHA-256 of a module's ``state_dict``: every entry's name, dtype, shape and bytes, in name order.

    Two modules with the same weights give the same digest whatever their device; any changed value changes it.
    This is the weights hash that protocol cards and FID cache keys use for networks that do not come from a file.

    Example:
        >>> import torch
        >>> a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
        >>> _ = b.load_state_dict(a.state_dict())
        >>> state_dict_sha256(a) == state_dict_sha256(b)
        True
        >>> with torch.no_grad():
        ...     _ = b.bias.add_(1.0)
        >>> state_dict_sha256(a) == state_dict_sha256(b)
        False
    """
    digest = hashlib.sha256()
    state = module.state_dict()
    for key in sorted(state):
        digest.update(key.encode("utf-8"))
        _feed(digest, state[key])
    return digest.hexdigest()


def _feed(digest: "hashlib._Hash", value: Any, depth: int = 0) -> None:
    """Feeds a description of ``value`` to ``digest`` that is the same in every process: tensors, arrays and modules
    by content, functions by their code, constants, defaults and closure, a ``functools.partial`` by its function and
    arguments, an object whose ``repr`` holds its address by its class, ``__call__`` and attributes, anything else by
    ``repr``. Nesting stops at depth 4, which also ends a function that refers to itself."""
    if isinstance(value, nn.Module):
        digest.update(f"module {type(value).__qualname__} {state_dict_sha256(value)}".encode("utf-8"))
    elif isinstance(value, Tensor):
        tensor = value.detach().to("cpu").contiguous()
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode("utf-8"))
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif hasattr(value, "__array__") and hasattr(value, "dtype"):  # a NumPy array
        array = np.ascontiguousarray(value)
        digest.update(f"{array.dtype}{array.shape}".encode("utf-8") + array.tobytes())
    elif isinstance(value, types.CodeType):  # its constants (nested functions' code among them) at the same depth
        digest.update(value.co_code + repr(value.co_names).encode("utf-8"))
        for const in value.co_consts:
            _feed(digest, const, depth)
    elif isinstance(value, (tuple, list)) and depth < 4:
        digest.update(f"{type(value).__name__}{len(value)}".encode("utf-8"))
        for item in value:
            _feed(digest, item, depth + 1)
    elif isinstance(value, (set, frozenset)):  # e.g. the constant of `x in {"a", "b"}`: ordered by repr, not by hash
        digest.update(repr(sorted(repr(item) for item in value)).encode("utf-8"))
    elif depth >= 4 and (callable(value) or type(value).__repr__ is object.__repr__):
        digest.update(_callable_name(value).encode("utf-8"))  # deep or self-referential nesting: the name only
    else:
        if isinstance(value, functools.partial):
            parts = [value.func, value.args, tuple(sorted(value.keywords.items()))]
        elif isinstance(getattr(value, "__code__", None), types.CodeType):  # a function or lambda
            parts = [value.__code__, value.__defaults__ or (), *map(_cell_contents, value.__closure__ or ())]
        elif type(value).__repr__ is object.__repr__:  # "<X object at 0x...>" would differ from run to run
            call = getattr(type(value), "__call__", None)
            parts = [getattr(call, "__code__", None), *sorted(getattr(value, "__dict__", {}).items())]
        else:
            digest.update(repr(value).encode("utf-8"))
            return
        digest.update(_callable_name(value).encode("utf-8"))
        for part in parts:
            _feed(digest, part, depth + 1)


def callable_fingerprint(fn: Callable[..., Any]) -> str:
    """``"module.qualname sha256:<16 hex>"``: a name and a hash of what a function computes, for cache keys.

    The hash covers the function's bytecode and constants, its default arguments and the values it closes over
    (tensors, arrays and modules by content, other values by ``repr``); for a ``functools.partial``, its function
    and arguments; for a callable object, its class's ``__call__`` and its attributes. It cannot see globals read,
    so a features function that reads a global network hashes equal before and after that network changes: close
    over the network (or pass it as the classifier) to have it in the key.

    Example:
        >>> import torch
        >>> w1, w2 = torch.ones(2), torch.zeros(2)
        >>> f1, f2 = (lambda net, x: x * w1), (lambda net, x: x * w2)
        >>> callable_fingerprint(f1) == callable_fingerprint(f1), callable_fingerprint(f1) == callable_fingerprint(f2)
        (True, False)
    """
    digest = hashlib.sha256()
    _feed(digest, fn)
    return f"{_callable_name(fn)} sha256:{digest.hexdigest()[:16]}"


def _cell_contents(cell: Any) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell
        return None


def _callable_name(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', None) or ''}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"


def _load_weights(path: Path, expected: str, load: Callable[[Dict[str, Tensor]], Any]) -> Any:
    """``load(state_dict)`` of the weights file at ``path``, each failure an error naming the file and ``expected``.

    ``torch.load``'s and ``load_state_dict``'s own messages name neither the file nor what was expected (an unpickling
    error for random bytes; every missing key on its own line). Loaded with ``weights_only=True``: a weights file is a
    plain mapping of tensors (another key or value fails in ``load_state_dict``, reported below).
    """
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure here means the file is not a weights file
        raise ValueError(
            f"weights file {str(path)!r} could not be read as {expected} ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:200] if str(error) else ''}); the file is damaged or not a weights file"
        ) from None
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"weights file {str(path)!r} must hold {expected} (a mapping name -> tensor), got "
                         f"{type(state_dict).__name__}")
    try:
        return load(dict(state_dict))
    except (RuntimeError, AttributeError) as error:  # a strict load_state_dict of other weights, or of other keys
        message = " ".join(str(error).split())[:300]  # on one line: load_state_dict lists every key on its own
        raise ValueError(f"weights file {str(path)!r} does not hold {expected}: {message}") from None


def resolve_tf_inception_weights(
    weights_path: Optional[Union[str, os.PathLike]] = None,
    *,
    sha256: Optional[str] = TF_INCEPTION_SHA256,
    url: str = TF_INCEPTION_URL,
    cache_dir: Optional[Union[str, os.PathLike]] = None,
    download: bool = True,
    progress: bool = True,
) -> Path:
    """Finds (downloading on first use) the weights file of the paper's Inception and checks its SHA-256.

    Args:
        weights_path: a local copy of the weights; when given, nothing is downloaded.
        sha256: the expected SHA-256 (default: :data:`TF_INCEPTION_SHA256`); ``None`` skips the check, for a file
            you converted yourself.
        url: where to download from (default: torch-fidelity's release, :data:`TF_INCEPTION_URL`).
        cache_dir: where downloads are kept (default: ``torch.hub.get_dir()/checkpoints``, the directory
            torch-fidelity uses, so both share one copy).
        download: allow downloading when the file is not in the cache.
        progress: show a progress bar while downloading.

    Returns:
        The path of the verified file.

    Raises:
        FileNotFoundError: ``weights_path`` does not exist.
        ValueError: the file's SHA-256 is not ``sha256``.
        RuntimeError: the weights are not cached and cannot be downloaded (the message says how to get them), or
            the downloaded file failed the digest check (torch.hub's "invalid hash value").
    """
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"weights_path {str(weights_path)!r} is not a file")
    else:
        directory = Path(cache_dir).expanduser() if cache_dir is not None else Path(torch.hub.get_dir()) / "checkpoints"
        path = directory / os.path.basename(url.split("?", 1)[0])
        how_to = (f"download {url} on a machine with internet access and pass weights_path='<file>', or copy it to "
                  f"{str(path)!r}")
        if not path.is_file() and not download:
            raise RuntimeError(f"the Inception weights are not at {str(path)!r} and download=False; {how_to}")
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            # Without sha256, the digest prefix that the file's name carries (torch.hub's convention, as torchvision's
            # weights files have). torch.hub writes to a temporary file, checks the digest (its RuntimeError names
            # both), and only then moves the file into place: a file failing the check never lands in the cache.
            named = torch.hub.HASH_REGEX.search(path.name)
            try:
                torch.hub.download_url_to_file(url, str(path), hash_prefix=sha256 or (named and named.group(1)),
                                               progress=progress)
            except (URLError, OSError) as error:
                raise RuntimeError(f"could not download the Inception weights ({error}); {how_to}") from error
    if sha256 is not None and (got := sha256_of_file(path)) != sha256.lower():
        raise ValueError(f"weights file {str(path)!r} has SHA-256 {got}, expected {sha256.lower()}; the file is "
                         "corrupt or a different one (delete it to download again, or pass sha256=None to trust a "
                         "file of your own)")
    return path


class ImageExtractor(nn.Module):
    """Base class: a network that maps uint8 images ``(N, C, H, W)`` to float logits ``(N, num_logits)``.

    Subclasses set ``num_logits`` (``None`` if unknown in advance), ``num_features`` (the size of
    :meth:`features`, ``None`` if not provided or unknown) and ``channels`` (the required C, ``None`` for any
    shape), and implement ``forward``; those that give FID features implement :meth:`features` too. For the
    protocol card they may set ``resize`` (how they resize images) and ``weights_sha256`` (the SHA-256 of their
    weights file; by default the hash of their ``state_dict``, :func:`state_dict_sha256`).
    """

    num_logits: Optional[int] = None
    num_features: Optional[int] = None
    channels: Optional[int] = 3
    #: How the extractor resizes its input, for the protocol card.
    resize: str = "unspecified"
    #: True when :meth:`logits_and_features` costs one pass (so both outputs are computed whenever one is needed).
    single_pass: bool = False
    #: Whether the network's weights are fixed, as the Inception networks' are; ``train()`` then leaves it in eval
    #: mode, so its BatchNorm layers keep the statistics it was trained with.
    frozen: bool = False

    def train(self, mode: bool = True) -> "ImageExtractor":
        return super().train(mode and not self.frozen)

    @property
    def features_name(self) -> str:
        """What :meth:`features` returns, for the protocol card and FID cache keys."""
        cls = type(self)
        return f"{cls.__module__}.{cls.__qualname__}.features"

    def check_images(self, images: Tensor, argument: str = "images") -> None:
        """Raises ``TypeError`` unless ``images`` are uint8, ``ValueError`` unless they have a shape this extractor
        accepts."""
        if not isinstance(images, Tensor) or images.dtype != torch.uint8:
            raise TypeError(f"{type(self).__name__} expects uint8 images, got {getattr(images, 'dtype', images)!r}")
        fixed = self.channels is not None  # (N, C, H, W) with C = channels; else any (N, ...)
        bad_shape = (images.dim() != 4 or images.shape[1] != self.channels) if fixed else images.dim() < 2
        if bad_shape or images.shape[0] < 1:
            shape = "(N, ...)" if self.channels is None else f"(N, {self.channels}, H, W)"
            hint = " (repeat grey images with x.expand(-1, 3, -1, -1))" if self.channels == 3 else ""
            raise ValueError(f"{argument} must have shape {shape} with N >= 1, got {tuple(images.shape)}{hint}")

    @property
    def provides_features(self) -> bool:
        """Whether :meth:`features` is implemented (FID needs it)."""
        return type(self).features is not ImageExtractor.features

    def features(self, images: Tensor) -> Tensor:
        """Pool features ``(N, num_features)`` for FID; not every extractor provides them."""
        raise NotImplementedError(_missing_features_message(self))

    def logits_and_features(self, images: Tensor) -> Tuple[Tensor, Tensor]:
        """Both outputs; extractors that get them from one pass override this."""
        return self(images), self.features(images)

    @property
    def network_name(self) -> str:
        """The name on the protocol card."""
        return type(self).__name__

    @property
    def weights_digest(self) -> str:
        """SHA-256 of the weights, ``weights_sha256`` if the extractor set it (its file), else of its state dict."""
        declared = getattr(self, "weights_sha256", None)
        return declared if isinstance(declared, str) else state_dict_sha256(self)

    @property
    def dtype_name(self) -> str:
        """The name of the dtype the network computes in (``dtype`` if set, else that of its first floating-point
        parameter or buffer)."""
        dtype = getattr(self, "dtype", None)
        if not isinstance(dtype, torch.dtype):
            tensors = [t for t in list(self.parameters()) + list(self.buffers()) if t.is_floating_point()]
            dtype = tensors[0].dtype if tensors else torch.float32
        return str(dtype).replace("torch.", "")

    def describe(self) -> Dict[str, Any]:
        """``network``, ``weights_sha256``, ``resize``, ``dtype`` and ``features``: the extractor's part of a protocol
        card and of FID's cache key."""
        return {
            "network": self.network_name,
            "weights_sha256": self.weights_digest,
            "resize": self.resize,
            "dtype": self.dtype_name,
            "features": self.features_name if self.provides_features else None,
        }


class SharedPass:
    """One network pass per batch, shared by every metric given this object (the Inception Score and FID).

    An :class:`~ignite_igan.metrics.InceptionScore` and an :class:`~ignite_igan.metrics.FID` attached to one
    evaluator receive the same batch. Given the same ``SharedPass``, the first metric's call runs the network (both
    logits and features when the extractor computes them in one pass, as :class:`TFInceptionV3` does) and the
    second takes the result of that pass. Only the last batch is kept, and it counts as the same only if it is the
    very same tensor object, unmodified (same version counter), asked for with the same input range, device, TF32
    setting and chunk size. A metric given an extractor instead makes a pass of its own, shared with nobody.

    Args:
        extractor: ``"inception-v3-compat"`` (default, the paper's network), ``"torchvision"`` or an
            :class:`ImageExtractor` (wrap a plain classifier in :class:`ClassifierExtractor`).
        device: where a named network is built.

    Example:
        >>> import torch
        >>> from ignite.engine import Engine
        >>> from ignite_igan.metrics import FID, InceptionScore
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 10))
        >>> shared = SharedPass(ClassifierExtractor(net, features_fn=lambda net, x: net[0](x)))
        >>> real = torch.rand(64, 3, 4, 4, generator=torch.Generator().manual_seed(0))
        >>> evaluator = Engine(lambda engine, batch: batch)
        >>> InceptionScore(shared, input_range="[0,1]", splits=2).attach(evaluator, "is")
        >>> FID(shared, input_range="[0,1]", real=real).attach(evaluator, "fid")
        >>> state = evaluator.run([torch.rand(32, 3, 4, 4) for _ in range(2)])  # the network runs once per batch
        >>> sorted(state.metrics)
        ['fid', 'is', 'is_std']
    """

    def __init__(self, extractor: Union[str, ImageExtractor] = "inception-v3-compat",
                 device: Union[str, torch.device] = "cpu") -> None:
        if not isinstance(extractor, (str, ImageExtractor)):
            raise TypeError(f"extractor must be a network name or an ImageExtractor, got {type(extractor).__name__}; "
                            "wrap a classifier as ClassifierExtractor(net, input_range=..., features_fn=...)")
        self.extractor = _as_extractor(extractor, "[0,1]", device)
        self._last: Optional[Tuple[Tensor, int, Tuple[Any, ...]]] = None
        self._outputs: Dict[str, Tensor] = {}

    def forget(self) -> None:
        """Drops the last batch and its outputs (metrics call it at ``reset`` and ``compute``)."""
        self._last, self._outputs = None, {}

    def __call__(
        self,
        images: Tensor,
        output: str,
        *,
        input_range: str,
        device: Union[str, torch.device],
        allow_tf32: bool = False,
        batch_size: Optional[int] = None,
        argument: str = "images",
    ) -> Tensor:
        """The ``"logits"`` ``(N, K)`` or ``"features"`` ``(N, D)`` of a batch in ``input_range``, detached.

        The batch is converted to uint8 by rounding (:func:`to_uint8`) and run through the network on ``device`` in
        chunks of at most ``batch_size`` images (``None``: all), with TF32 allowed only if ``allow_tf32``.
        """
        key = (input_range, str(torch.device(device)), allow_tf32, batch_size)
        version = images._version if isinstance(images, Tensor) and not images.is_inference() else None
        last = self._last
        if version is None or last is None or last[0] is not images or last[1:] != (version, key):
            self.forget()
        if output not in self._outputs:
            uint8 = to_uint8(images, input_range, argument=argument)
            self.extractor.check_images(uint8, argument=argument)
            network = self.extractor if output == "logits" else self.extractor.features
            # A single-pass network gives both outputs at once: the other is kept for the other metric.
            wanted = ("logits", "features") if self.extractor.single_pass else (output,)
            run = self.extractor.logits_and_features if self.extractor.single_pass else lambda x: (network(x),)
            with torch.no_grad(), tf32_mode(allow_tf32):
                parts = [run(chunk.to(device)) for chunk in uint8.split(batch_size or max(len(uint8), 1))]
            for i, name in enumerate(wanted):
                self._outputs[name] = torch.cat([part[i].detach() for part in parts])
        if version is not None:
            self._last = (images, version, key)  # a strong reference: its id cannot be reused meanwhile
        return self._outputs[output]


def _missing_features_message(extractor: nn.Module) -> str:
    name = type(extractor).__name__
    if isinstance(extractor, ClassifierExtractor):
        what = f"ClassifierExtractor({type(extractor.classifier).__name__}) was built without features_fn"
    else:
        what = f"{name} provides none: implement {name}.features(images) -> (N, D), or"
    return (
        f"FID needs image features, and {what}. Pass features_fn=lambda net, x: ... returning (N, D) features, e.g. "
        f"the penultimate layer: ClassifierExtractor(net, features_fn=lambda net, x: net.body(x).flatten(1)), or "
        f"FID(extractor=net, features_fn=lambda net, x: net.body(x).flatten(1)); "
        f"features_fn=lambda net, x: net(x) uses the logits as features"
    )


def _build_torch_fidelity_inception(state_dict: dict) -> nn.Module:
    """torch-fidelity's ``FeatureExtractorInceptionV3`` holding ``state_dict``.

    Its constructor insists on loading weights itself, either from its URL or with ``torch.load(weights_only=False)``
    on a path. We route its URL loader to the state dict that we verified and loaded safely, so torch-fidelity's
    network and strict ``load_state_dict`` are used unchanged and nothing is unpickled unsafely.
    """
    from torch_fidelity import feature_extractor_inceptionv3 as tf_module

    with mock.patch.object(tf_module, "load_state_dict_from_url", lambda *args, **kwargs: state_dict):
        return tf_module.FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048"], feature_extractor_weights_path=None, verbose=False
        )


class _InceptionNetwork(ImageExtractor):
    """What the two Inception networks share: frozen in eval mode, uint8 ``(N, 3, H, W)`` in, and from one pass the
    logits and the 2048 pool features, which a forward hook on the pool layer catches in the network's own dtype
    (torch-fidelity casts the features it returns to float32, so float64 mode would not stay float64 to the end).
    Subclasses call :meth:`_catch_pool` with their pool layer and give ``_network(images)``, the network's output on
    checked uint8 images, and ``_logits(output, pool)``, the logits from that output or from the pool features."""

    num_features = 2048
    channels = 3
    single_pass = True
    frozen = True

    def _load(
        self,
        weights_path: Optional[Union[str, os.PathLike]],
        sha256: Optional[str],
        dtype: torch.dtype,
        expected: str,
        build: Callable[[Dict[str, Tensor]], nn.Module],
        **download: Any,
    ) -> nn.Module:
        """The network ``build(state_dict)`` of the verified weights file (:func:`resolve_tf_inception_weights`, with
        ``download`` its download options), recording ``dtype``, the file and its SHA-256."""
        self.dtype = check_choice("dtype", dtype, (torch.float32, torch.float64))
        path = resolve_tf_inception_weights(weights_path, sha256=sha256, **download)
        net = _load_weights(path, expected, build)
        #: SHA-256 of the loaded file (checked against ``sha256``, or computed when that is ``None``).
        self.weights_sha256 = sha256.lower() if sha256 is not None else sha256_of_file(path)
        self.weights_path = path
        return net

    def _catch_pool(self, pool_layer: nn.Module) -> None:
        self._pool: List[Tensor] = []
        pool_layer.register_forward_hook(lambda module, args, output: self._pool.append(output))

    def logits_and_features(self, images: Tensor) -> Tuple[Tensor, Tensor]:
        """The logits and the 2048 pool features from one pass, in the extractor's dtype."""
        self.check_images(images)
        self._pool.clear()
        with torch.no_grad():
            output = self._network(images)
        pool = self._pool.pop().flatten(1)
        self._pool.clear()
        return self._logits(output, pool), pool

    def forward(self, images: Tensor) -> Tensor:
        return self.logits_and_features(images)[0]

    def features(self, images: Tensor) -> Tensor:
        """The 2048 pool features (FID's), in the extractor's dtype."""
        return self.logits_and_features(images)[1]


class TFInceptionV3(_InceptionNetwork):
    """The paper's Inception network: the 1008 unbiased logits of TensorFlow's 2015-12-05 Inception-v3.

    torch-fidelity's ``inception-v3-compat`` network with its TensorFlow-1 bilinear resize to 299x299 does the work;
    this wrapper adds the SHA-256 check, safe loading and a real float64 mode. The logits are
    ``pool_3 @ W`` (``softmax/logits/MatMul``), the feature torch-fidelity calls ``logits_unbiased``.

    Args:
        weights_path: a local copy of the weights file (offline machines). ``None`` downloads it on first use from
            torch-fidelity's release into ``torch.hub.get_dir()/checkpoints``.
        sha256: expected SHA-256 of the file (default :data:`TF_INCEPTION_SHA256`; ``None`` to skip).
        url: download address (default :data:`TF_INCEPTION_URL`).
        cache_dir: download directory (default ``torch.hub.get_dir()/checkpoints``).
        download: allow downloading.
        dtype: ``torch.float32`` (default; the paper's TensorFlow precision) or ``torch.float64``, which runs the
            resize, every layer and the logits in float64, so the scores do not depend on the batch size
            (torch-fidelity's own ``'float64'`` option silently means float32).
        progress: show a progress bar while downloading.

    Example:
        >>> extractor = TFInceptionV3(weights_path="weights-inception-2015-12-05-6726825d.pth")  # doctest: +SKIP
        >>> logits = extractor(uint8_images)  # (N, 1008)  # doctest: +SKIP
    """

    num_logits = 1008
    resize = "TF1 bilinear to 299x299 (align_corners=False, no half-pixel centres; torch-fidelity)"
    network_name = "TFInceptionV3 (TF inception-2015-12-05 via torch-fidelity inception-v3-compat)"
    features_name = "2048 pool_3 features"

    def __init__(
        self,
        weights_path: Optional[Union[str, os.PathLike]] = None,
        *,
        sha256: Optional[str] = TF_INCEPTION_SHA256,
        url: str = TF_INCEPTION_URL,
        cache_dir: Optional[Union[str, os.PathLike]] = None,
        download: bool = True,
        dtype: torch.dtype = torch.float32,
        progress: bool = True,
    ) -> None:
        super().__init__()
        expected = "the state dict of torch-fidelity's inception-v3-compat network (TF Inception 2015-12-05)"
        self.net = self._load(weights_path, sha256, dtype, expected, _build_torch_fidelity_inception, url=url,
                              cache_dir=cache_dir, download=download, progress=progress)
        if dtype == torch.float64:
            self.net.to(torch.float64)
            # torch-fidelity casts the input to this dtype before the resize; its own option maps "float64" to
            # float32, so we set the attribute directly.
            self.net.feature_extractor_internal_dtype = torch.float64
        self.net.requires_grad_(False).eval()
        self._catch_pool(self.net.AvgPool)

    def _network(self, images: Tensor) -> Tensor:
        return self.net(images)

    def _logits(self, output: Tensor, pool: Tensor) -> Tensor:
        # torch-fidelity's "logits_unbiased": pool_3 times the softmax weights, without the bias
        # (docs/reference.md, The Inception Score).
        return pool.mm(self.net.fc.weight.t())


class TorchvisionInceptionV3(_InceptionNetwork):
    """torchvision's ImageNet Inception-v3 (1000 classes), with the input handling it expects.

    The uint8 images are scaled to [0, 1], resized to 299x299 with bilinear interpolation (``align_corners=False``)
    and normalized with the ImageNet mean and std; the model's ``transform_input=True`` then maps them to the
    scale its weights were trained on. This network is **not** the paper's: it gives about 9.4-9.7 instead of 11.24
    on CIFAR-10's training set. Use it only to compare with work that reports torchvision-Inception scores.

    Args:
        weights_path: a local ``inception_v3`` state dict (e.g. ``inception_v3_google-0cc3c7bd.pth``). ``None``
            uses torchvision's ``Inception_V3_Weights.IMAGENET1K_V1`` (downloaded on first use into
            ``torch.hub.get_dir()/checkpoints`` and hash-checked by torchvision).
        sha256: expected SHA-256 of ``weights_path`` (``None`` skips the check).
        dtype: ``torch.float32`` or ``torch.float64``.
        download: allow torchvision to download its weights when ``weights_path`` is ``None`` and they are not
            cached.
    """

    num_logits = 1000
    resize = "torch bilinear to 299x299 (align_corners=False), ImageNet normalization"
    network_name = "TorchvisionInceptionV3 (torchvision IMAGENET1K_V1)"
    features_name = "2048 avgpool features"
    _MEAN = (0.485, 0.456, 0.406)
    _STD = (0.229, 0.224, 0.225)

    def __init__(
        self,
        weights_path: Optional[Union[str, os.PathLike]] = None,
        *,
        sha256: Optional[str] = None,
        dtype: torch.dtype = torch.float32,
        download: bool = True,
    ) -> None:
        super().__init__()
        from torchvision.models import Inception_V3_Weights, inception_v3

        if weights_path is not None:  # a local file, checked and loaded as the TF network's is
            model = inception_v3(weights=None, aux_logits=True, transform_input=True, init_weights=False)
            self._load(weights_path, sha256, dtype, "the state dict of torchvision's inception_v3",
                       model.load_state_dict)
        else:  # torchvision downloads its weights into torch.hub's checkpoints and checks their digest itself
            self.dtype = check_choice("dtype", dtype, (torch.float32, torch.float64))
            weights = Inception_V3_Weights.IMAGENET1K_V1
            self.weights_path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
            how_to = f"download {weights.url} on a machine with internet access and pass weights_path='<file>'"
            if not download and not self.weights_path.is_file():
                raise RuntimeError(f"torchvision's Inception weights are not at {str(self.weights_path)!r} and "
                                   f"download=False; {how_to}")
            try:
                model = inception_v3(weights=weights)
            except (URLError, OSError) as error:
                raise RuntimeError(f"could not download torchvision's Inception weights ({error}); {how_to}") from error
            #: SHA-256 of the weights file that was loaded.
            self.weights_sha256 = sha256_of_file(self.weights_path)
        self.model = model.to(dtype).requires_grad_(False).eval()
        self.register_buffer("mean", torch.tensor(self._MEAN, dtype=dtype).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self._STD, dtype=dtype).view(1, 3, 1, 1), persistent=False)
        self._catch_pool(self.model.avgpool)

    def _network(self, images: Tensor) -> Tensor:
        x = images.to(self.dtype) / 255.0
        if x.shape[-2:] != (299, 299):
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return self.model((x - self.mean) / self.std)

    def _logits(self, output: Tensor, pool: Tensor) -> Tensor:
        return output


class ClassifierExtractor(ImageExtractor):
    """Any classifier that returns logits (and, for FID, features), fed the images in the range it was trained on.

    The metric's uint8 images are mapped back to floats in ``input_range`` (the quantization to 256 levels is kept,
    as if the images had been saved to PNG), and the classifier runs in eval mode under ``torch.no_grad()``; its
    previous train/eval mode is restored afterwards.

    Args:
        classifier: an ``nn.Module`` mapping images to logits ``(N, K)``.
        input_range: the range the classifier expects: ``"[-1,1]"``, ``"[0,1]"`` (default) or ``"uint8"``.
        num_logits: K, when known (checked at every call).
        num_features: D, the size of ``features_fn``'s output, when known (checked at every call).
        features_fn: ``features_fn(classifier, x) -> (N, D)``: the features FID compares, typically the
            penultimate layer (``lambda net, x: net.body(x).flatten(1)``); ``x`` are the images as the classifier
            takes them. Without it the extractor gives logits only (enough for the Inception Score).

    Example:
        >>> import torch
        >>> body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU())
        >>> net = torch.nn.Sequential(body, torch.nn.Linear(32, 10))
        >>> extractor = ClassifierExtractor(net, input_range="[0,1]", features_fn=lambda net, x: net[0](x))
        >>> images = torch.zeros(2, 1, 8, 8, dtype=torch.uint8)
        >>> extractor(images).shape, extractor.features(images).shape
        (torch.Size([2, 10]), torch.Size([2, 32]))
    """

    channels = None
    resize = "none"

    def __init__(
        self,
        classifier: nn.Module,
        input_range: str = "[0,1]",
        num_logits: Optional[int] = None,
        num_features: Optional[int] = None,
        features_fn: Optional[FeaturesFn] = None,
    ) -> None:
        super().__init__()
        if not isinstance(classifier, nn.Module) or isinstance(classifier, ImageExtractor):
            raise TypeError("classifier must be a torch.nn.Module that is not an ImageExtractor (pass those to the "
                            f"metric directly), got {type(classifier).__name__}")
        if features_fn is not None and not callable(features_fn):
            raise TypeError(f"features_fn must be a callable (classifier, x) -> features, got {features_fn!r}")
        self.classifier = classifier
        self.input_range = _normalize_range(input_range)
        self.num_logits = check_int("num_logits", num_logits, minimum=1, allow_none=True)
        self.num_features = check_int("num_features", num_features, minimum=1, allow_none=True)
        self.features_fn = features_fn

    @property
    def provides_features(self) -> bool:
        return self.features_fn is not None

    @property
    def network_name(self) -> str:
        return f"ClassifierExtractor({type(self.classifier).__name__}, input {self.input_range})"

    @property
    def features_name(self) -> str:
        """``features_fn <module.qualname> sha256:<hash of its code and closure>`` (:func:`callable_fingerprint`)."""
        if self.features_fn is None:
            return "none"
        return f"features_fn {callable_fingerprint(self.features_fn)}"

    @property
    def weights_sha256(self) -> str:
        """SHA-256 of the classifier's ``state_dict``, computed on every call (the classifier may be trained)."""
        return state_dict_sha256(self.classifier)

    def _evaluate(self, fn: FeaturesFn, images: Tensor, name: str, size: Optional[int], argument: str) -> Tensor:
        """``fn(classifier, x)`` on the images in the classifier's range, in eval mode without grad, checked to be
        ``(N, size)``: the user's network is checked where its output enters the metrics."""
        self.check_images(images)
        parameter = next(self.classifier.parameters(), None)
        dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else torch.float32
        device = parameter.device if parameter is not None else images.device
        x = _from_uint8(images.to(device), self.input_range, dtype)
        with torch.no_grad(), evaluation_mode(self.classifier):
            value = fn(self.classifier, x)
        n = images.shape[0]
        if value.shape[:1] != (n,) or value.dim() != 2 or value.shape[1] != (size or value.shape[1]):
            declared = f", but num_{name}={size}" if size is not None else ""
            raise ValueError(f"{argument} returned {name} of shape {tuple(value.shape)} for N={n} images{declared}")
        return value

    def forward(self, images: Tensor) -> Tensor:
        return self._evaluate(_logits_of, images, "logits", self.num_logits, "the classifier")

    def features(self, images: Tensor) -> Tensor:
        """``features_fn(classifier, x)`` on the images in the classifier's range, in eval mode, without grad."""
        if self.features_fn is None:
            return super().features(images)
        return self._evaluate(self.features_fn, images, "features", self.num_features, "features_fn")


def _logits_of(classifier: nn.Module, x: Tensor) -> Tensor:
    """The classifier's logits, the first output of one that returns several (``(logits, aux)``)."""
    logits = classifier(x)
    return logits[0] if isinstance(logits, (tuple, list)) else logits


NAMED_EXTRACTORS = ("inception-v3-compat", "torchvision")

# One network per (name, device), shared by every metric that asks for it by name: an Inception Score and an FID
# built with the default network hold the same module (one copy in memory; one pass per batch needs a SharedPass).
_SHARED_EXTRACTORS: "weakref.WeakValueDictionary[Tuple[str, str], ImageExtractor]" = weakref.WeakValueDictionary()


def _build_named_extractor(name: str, device: Union[str, torch.device] = "cpu") -> ImageExtractor:
    """The network called ``name`` on ``device``, built (weights resolved and checked) now or shared if built."""
    key = (name, str(torch.device(device)))
    extractor = _SHARED_EXTRACTORS.get(key)
    if extractor is None:
        # torch-fidelity's constructor initializes its layers randomly before loading the weights; keep that away
        # from the global random state that seeds the user's models.
        with torch.random.fork_rng(devices=[]):
            extractor = TFInceptionV3() if name == "inception-v3-compat" else TorchvisionInceptionV3()
        extractor = extractor.to(device)
        _SHARED_EXTRACTORS[key] = extractor
    return extractor


def _as_extractor(
    extractor: Union[str, nn.Module, None],
    input_range: str,
    device: Union[str, torch.device] = "cpu",
    features_fn: Optional[FeaturesFn] = None,
) -> ImageExtractor:
    """Resolves the ``extractor`` argument of the metrics; a name is built (and its weights checked) right away."""
    if isinstance(extractor, nn.Module) and not isinstance(extractor, ImageExtractor):
        return ClassifierExtractor(extractor, input_range, features_fn=features_fn)
    if features_fn is not None:
        raise TypeError(f"features_fn is for a plain classifier nn.Module given as extractor, got "
                        f"{type(extractor).__name__}; give an ImageExtractor its features through "
                        "ClassifierExtractor(net, features_fn=...)")
    if isinstance(extractor, ImageExtractor):
        return extractor
    if extractor is not None and extractor not in NAMED_EXTRACTORS:
        raise ValueError(f"extractor must be an nn.Module, 'inception-v3-compat' or 'torchvision', got {extractor!r}")
    return _build_named_extractor(extractor or "inception-v3-compat", device)


class _ExtractorMetric(Metric):
    """The base of :class:`~ignite_igan.metrics.InceptionScore` and :class:`~ignite_igan.metrics.FID`: the checks
    of their shared arguments, the network (a :class:`SharedPass`), and the one call that turns a batch into logits
    or features, whose checks (:func:`to_uint8`, :meth:`ImageExtractor.check_images`) sit in that pass."""

    required_output_keys = None

    def __init__(
        self,
        extractor: Union[str, nn.Module, SharedPass, None],
        input_range: str,
        output_transform: Callable,
        device: Union[str, torch.device],
        extractor_batch_size: Optional[int],
        allow_tf32: bool,
        features_fn: Optional[FeaturesFn] = None,
    ) -> None:
        device = check_device("device", device)  # before a network is built there
        self._input_range = _normalize_range(input_range)
        self._allow_tf32 = check_bool("allow_tf32", allow_tf32)
        self._extractor_batch_size = check_int("extractor_batch_size", extractor_batch_size, minimum=1, allow_none=True)
        # The network first (reset() needs it): a named one is built, and its weights checked, right now.
        if not isinstance(extractor, SharedPass) or features_fn is not None:
            extractor = SharedPass(_as_extractor(extractor, self._input_range, torch.device(device), features_fn))
        self._pass = extractor
        self._extractor = extractor.extractor.to(torch.device(device))
        super().__init__(output_transform=output_transform, device=device, skip_unrolling=True)

    @property
    def extractor(self) -> ImageExtractor:
        """The network."""
        return self._extractor

    def _options(self, input_range: Optional[str] = None) -> Dict[str, Any]:
        """The keyword arguments of this metric's pass (:class:`SharedPass`) over images in ``input_range`` (default:
        the metric's)."""
        return dict(input_range=input_range or self._input_range, device=self._device, allow_tf32=self._allow_tf32,
                    batch_size=self._extractor_batch_size)

    def _card(self, metric: str, output: str, **fields: Any) -> Protocol:
        """The protocol card of the metric's last ``compute``: its network, input range, TF32 setting and samples."""
        return Protocol.of_network(metric, self._extractor.describe(), output=output, input_range=self._input_range,
                                   allow_tf32=self._allow_tf32, n_samples=self._n_samples, **fields)

    def _run(self, images: Tensor, output: str, argument: str = "images") -> Tensor:
        """The logits or features of a batch of the metric's images, on the metric's device."""
        return self._pass(images, output, argument=argument, **self._options())
