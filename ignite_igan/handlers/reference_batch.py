"""The fixed reference batch of virtual batch normalization (Salimans et al., 2016, §3.4), as an Ignite handler."""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from torch import Tensor, nn

from ignite_igan.handlers.base import Handler, unwrap
from ignite_igan.validation import check_instance, check_int, check_methods

__all__ = ["VirtualBatchReference"]


class VirtualBatchReference(Handler):
    """Draws a generator's VBN reference noise once, keeps it through checkpoints, and shares it across processes.

    Virtual batch norm normalizes each example with the statistics of a reference batch "chosen once and fixed at
    the start of training". As in the reference code (:ref:`ref-virtual-batch-norm`) the fixed part is the generator's
    *input* noise: it goes through the current generator at every step. The generator must offer ``sample_noise(n,
    generator, device)`` and ``set_reference(z)``, as :class:`ignite_igan.models.CIFARGenerator` with
    ``normalization="virtual"`` does.

    At ``event`` (default :attr:`Events.STARTED`):

    - if the handler holds no reference yet (a fresh run), it draws ``size`` noise vectors on the CPU, from a
      private ``torch.Generator`` seeded with ``seed``, or from torch's global generator when ``seed`` is None
      (then ``torch.manual_seed`` decides it); under :mod:`ignite.distributed` rank 0's draw is broadcast, so
      every process gets the same batch whatever its seed;
    - it then hands the reference to the generator with ``set_reference`` (moved to the generator's device).

    A resumed run restores the reference from :meth:`state_dict` (``ignite.handlers.Checkpoint``) and never
    redraws it. Attach this handler before a :class:`DataDependentInitialization` of the same generator: a VBN
    generator cannot run without its reference.

    Registered as a callable (``engine.add_event_handler(Events.STARTED, reference)``) it does what
    ``attach(engine)`` does. Several engines (e.g. a trainer and an evaluator) may share it: they all set the same
    reference; registering it twice with one engine raises a :class:`ValueError`.

    Args:
        generator: the generator (``DistributedDataParallel``/``DataParallel`` are unwrapped).
        size: the number of reference noise vectors (the reference's ImageNet run used 16, its batch size).
        seed: seed of the draw, or None for torch's global generator.

    Example:
        >>> import torch
        >>> from ignite.engine import Engine, Events
        >>> from ignite_igan.models import CIFARGenerator
        >>> from ignite_igan.handlers import VirtualBatchReference
        >>> gen = CIFARGenerator(normalization="virtual", widths=(16, 8))
        >>> trainer = Engine(lambda engine, batch: gen(gen.sample_noise(2)).shape)
        >>> reference = VirtualBatchReference(gen, size=4, seed=0)
        >>> reference.attach(trainer)
        >>> trainer.run([0], max_epochs=1).output
        torch.Size([2, 3, 16, 16])
        >>> torch.equal(gen.reference_noise, reference.reference)
        True
        >>> evaluator = Engine(lambda engine, batch: None)
        >>> _ = evaluator.add_event_handler(Events.STARTED, reference)  # the same as reference.attach(evaluator)
    """

    default_event = Events.STARTED
    twice = "set the reference twice"
    state_keys = ("reference_noise",)

    def __init__(self, generator: nn.Module, size: int, seed: Optional[int] = None) -> None:
        super().__init__()
        generator = unwrap(check_instance("generator", generator, nn.Module, "a torch.nn.Module"))
        check_methods("generator", generator, ("sample_noise", "set_reference"),
                      "ignite_igan.models.CIFARGenerator(normalization='virtual')")
        self.generator = generator
        self.size = check_int("size", size, minimum=1, hint="the reference batch size")
        self.seed = check_int("seed", seed, allow_none=True)
        self.reference: Optional[Tensor] = None

    def _on_event(self, engine: Engine) -> None:
        self.setup()

    def setup(self) -> Tensor:
        """Draw the reference if there is none yet, set it on the generator, and return it (CPU)."""
        if self.reference is None:
            self.reference = self._draw()
        self.generator.set_reference(self.reference)
        return self.reference

    def _draw(self) -> Tensor:
        rng = None if self.seed is None else torch.Generator().manual_seed(self.seed)
        noise = self.generator.sample_noise(self.size, generator=rng, device="cpu")
        if idist.get_world_size() > 1:
            noise = idist.broadcast(noise.contiguous(), src=0).cpu()
        return noise.detach().clone()

    def state_dict(self) -> Dict[str, Any]:
        """``{"reference_noise": the reference noise (CPU tensor) or None before it was drawn}``.

        The key is not ``"reference"``: Ignite's ``Checkpoint.load_objects`` with a single object saved under the
        name ``"reference"`` would take that key of the state for the object's own entry.
        """
        return {"reference_noise": self.reference}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the reference; it is set on the generator at the next ``event`` (or :meth:`setup`)."""
        if isinstance(state_dict, Mapping) and set(state_dict) == {"reference"}:  # checkpoints before 0.1.0's end
            state_dict = {"reference_noise": state_dict["reference"]}
        super().load_state_dict(state_dict)

    def _load_state(self, state_dict: Mapping[str, Any]) -> None:
        reference = self._finite_entry(state_dict, "reference_noise")  # NaN would make every VBN output NaN
        if reference is not None:
            # Any noise shape the generator draws, e.g. (size, z_dim) or dcgan.py's (size, nz, 1, 1).
            if not isinstance(reference, Tensor) or reference.dim() < 2 or reference.shape[0] != self.size:
                shape = tuple(reference.shape) if isinstance(reference, Tensor) else type(reference).__name__
                raise ValueError(f"state_dict['reference_noise'] must be a tensor of size={self.size} noise vectors "
                                 f"(size, ...) or None, got {shape}")
            reference = reference.detach().cpu().clone()
        self.reference = reference
