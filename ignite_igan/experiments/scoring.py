"""Scoring a generator while it trains: the score's network, the score every few epochs, and its report.

A sample-quality run scores its generator every few epochs and once more after the last, keeps the scores in a
checkpointed :class:`~ignite_igan.experiments.runs.History` (a resumed run reports the evaluations of its earlier
processes too), and reports the last one with its protocol card. The pieces:

- :func:`score_network`: the network that scores the samples, resolved before training (a run that cannot be
  scored fails before it spends any time), with a description of it for ``summary.json``: the paper's 2015
  TensorFlow Inception (``"inception-v3-compat"``), torchvision's Inception (``"torchvision"``), or, for 8x8
  digits, a :class:`~ignite_igan.models.DigitsClassifier` (``"digits"``).
- :func:`attach_periodic_score`: runs a :class:`~ignite_igan.metrics.GeneratorEvaluator` every ``every`` epochs
  and after the last one, appending each result to a history.
- :func:`inception_report`: the last Inception score of a history as ``summary.json`` entries and report lines.
- :func:`evaluation_event`: the event of those epochs (every ``every`` and the last), for whatever else a run does
  at its evaluations (a console line, another evaluator).

Example:
    >>> import torch
    >>> from ignite.engine import Engine
    >>> from ignite_igan.metrics import GeneratorEvaluator, InceptionScore
    >>> from ignite_igan.models import digits_generator
    >>> extractor, network = score_network("digits", input_range="[0,1]")  # trains a classifier, a few seconds
    >>> network["network"]
    'DigitsClassifier'
    >>> generator = digits_generator(normalization="batch")
    >>> scorer = GeneratorEvaluator(generator, {"is": InceptionScore(extractor, input_range="[0,1]", splits=2)},
    ...                             n_samples=20, batch_size=10)
    >>> trainer = Engine(lambda engine, batch: None)
    >>> history = attach_periodic_score(trainer, scorer, every=2)
    >>> _ = trainer.run([0], max_epochs=3)
    >>> [entry["epoch"] for entry in history.entries]  # epoch 2, and after the last
    [2, 3]
    >>> metrics, lines = inception_report(history, scorer, n_samples=20, splits=2, network=network)
    >>> sorted(metrics)[:3], lines[0].split()[0]
    (['inception_history', 'inception_score', 'inception_score_protocol'], 'score')
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from torch import nn

from ignite_igan import models
from ignite_igan.metrics import ClassifierExtractor, GeneratorEvaluator, TFInceptionV3, TorchvisionInceptionV3
from ignite_igan.experiments.runs import History
from ignite_igan.validation import check_choice, check_instance, check_int

__all__ = ["SCORE_NETWORKS", "score_network", "attach_periodic_score", "inception_report", "evaluation_event"]

#: The names :func:`score_network` takes, for the paper's Inception, torchvision's and the 8x8 digits' classifier.
SCORE_NETWORKS = ("inception-v3-compat", "torchvision", "digits")


def score_network(
    network: str,
    weights: Optional[Union[str, Path]] = None,
    device: Optional[Union[str, torch.device]] = None,
    input_range: str = "[0,1]",
) -> Tuple[nn.Module, Dict[str, Any]]:
    """The score's network and its description, resolved now.

    Args:
        network: one of :data:`SCORE_NETWORKS`.
        weights: a local weights file: an Inception's (offline machines; ``None`` downloads it once, rank 0 first
            while the other processes wait, then they find it cached), or a
            :class:`~ignite_igan.models.DigitsClassifier` state dict (``None`` trains one with seed 0, ~6 s on a
            CPU core).
        device: where the digits classifier lives (``None``: the CPU).
        input_range: the range of the images the digits classifier is given (``"[0,1]"`` or ``"[-1,1]"``).

    Returns:
        ``(extractor, description)``: the extractor for :class:`~ignite_igan.metrics.InceptionScore`, and a dict
        naming the network (``"network"``) and its weights file, or the seed and test accuracy of a digits
        classifier trained here.

    Raises:
        ValueError: an Inception whose weights cannot be had (download failed, wrong file); the message says how
            a recipe gets past it (``--inception-weights FILE``, or ``--is-every 0``).

    Example:
        >>> extractor, description = score_network("digits")
        >>> sorted(description)
        ['network', 'seed', 'test_accuracy']
    """
    if check_choice("network", network, SCORE_NETWORKS) == "digits":
        device = torch.device("cpu") if device is None else torch.device(device)
        if weights is not None:
            classifier, info = models.load_digits_classifier(weights, device), {"file": str(weights)}
        else:
            classifier, accuracy = models.train_digits_classifier(seed=0, device=device)
            info = {"seed": 0, "test_accuracy": accuracy}
        extractor = ClassifierExtractor(classifier, input_range=input_range, num_logits=10)
        return extractor, {"network": "DigitsClassifier", **info}
    if idist.get_rank() > 0:  # rank 0 downloads or checks the weights first; the others find them cached
        idist.barrier()
    try:
        builder = TFInceptionV3 if network == "inception-v3-compat" else TorchvisionInceptionV3
        extractor = builder(weights_path=weights)
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        raise ValueError(f"the score's network ({network}) is not available: {error}. Pass "
                         "--inception-weights FILE, or --is-every 0 to train without the score") from error
    finally:
        if idist.get_rank() == 0:
            idist.barrier()
    return extractor, {"network": network, "file": str(weights or "") or None}


def evaluation_event(every: int) -> Any:
    """``Events.EPOCH_COMPLETED`` every ``every`` epochs and after the last one (once): when a run evaluates.

    Args:
        every: epochs between evaluations (at least 1).

    Returns:
        The filtered event, for ``trainer.add_event_handler``.

    Example:
        >>> from ignite.engine import Engine
        >>> trainer, epochs = Engine(lambda engine, batch: None), []
        >>> _ = trainer.add_event_handler(evaluation_event(3), lambda engine: epochs.append(engine.state.epoch))
        >>> _ = trainer.run([0], max_epochs=7)
        >>> epochs
        [3, 6, 7]
    """
    every = check_int("every", every, minimum=1)
    return Events.EPOCH_COMPLETED(event_filter=lambda engine, epoch: epoch % every == 0
                                  or epoch == engine.state.max_epochs)


def attach_periodic_score(
    trainer: Engine, scorer: GeneratorEvaluator, every: int, history: Optional[History] = None
) -> History:
    """Runs ``scorer`` every ``every`` epochs of ``trainer`` and after its last epoch (once), into a history.

    Each evaluation appends ``epoch``, ``iteration`` and the scorer's metrics (e.g. ``is``, ``is_std``) to the
    history. Put the history in the checkpoint's ``to_save`` so that a resumed run keeps the earlier entries.

    Args:
        trainer: the training engine.
        scorer: the evaluator of the generator.
        every: epochs between scores (at least 1).
        history: the history to append to (default: a new one).

    Returns:
        The history.

    Example:
        >>> from ignite.engine import Engine
        >>> from ignite_igan.metrics import GeneratorEvaluator
        >>> generator = torch.nn.Linear(2, 2)
        >>> scorer = GeneratorEvaluator(generator, {}, n_samples=4, batch_size=2,
        ...                             noise_fn=lambda n, rng: torch.randn(n, 2, generator=rng))
        >>> trainer = Engine(lambda engine, batch: None)
        >>> history = attach_periodic_score(trainer, scorer, every=3)
        >>> _ = trainer.run([0, 1], max_epochs=7)
        >>> [(entry["epoch"], entry["iteration"]) for entry in history.entries]
        [(3, 6), (6, 12), (7, 14)]
    """
    check_instance("scorer", scorer, GeneratorEvaluator, "a GeneratorEvaluator")
    when = evaluation_event(every)
    history = History() if history is None else history
    trainer.add_event_handler(when, lambda e: history.append(epoch=e.state.epoch, iteration=e.state.iteration,
                                                             **scorer.run()))
    return history


def inception_report(
    history: History, scorer: GeneratorEvaluator, n_samples: int, splits: int, network: Dict[str, Any], name: str = "is"
) -> Tuple[Dict[str, Any], List[str]]:
    """The last Inception score of ``history`` as ``summary.json`` entries and as the report's lines.

    The protocol card of the score travels with the number: it is in the entries (``inception_score_protocol``,
    ``None`` if the metric published none) and, when there is one, on the report's second line.

    Args:
        history: the history of :func:`attach_periodic_score`, with at least one entry.
        scorer: the evaluator that produced it (its protocol cards).
        n_samples: samples per score.
        splits: splits per score.
        network: the description of :func:`score_network`.
        name: the score's metric name in the history.

    Returns:
        ``(metrics, lines)``: ``inception_score``, ``inception_score_std``, ``inception_history``,
        ``score_samples``, ``score_splits``, ``score_network`` and ``inception_score_protocol``; and the report's
        lines (``"  score  8.090 ± 0.070 (50,000 samples, inception-v3-compat)"``, then the protocol).

    Example:
        >>> history = History()
        >>> history.append(epoch=1, iteration=10, **{"is": 2.5, "is_std": 0.25})
        >>> scorer = GeneratorEvaluator(torch.nn.Linear(2, 2), {}, noise_fn=lambda n, rng: torch.zeros(n, 2))
        >>> metrics, lines = inception_report(history, scorer, 10, 2, {"network": "DigitsClassifier"})
        >>> metrics["inception_score"], lines
        (2.5, ['  score        2.500 ± 0.250 (10 samples, DigitsClassifier)'])
    """
    last = history.last
    if last is None:
        raise ValueError("history holds no score yet")
    card = scorer.protocols.get(name)
    metrics = {"inception_score": last[name], "inception_score_std": last[f"{name}_std"],
               "inception_history": history.entries, "score_samples": n_samples, "score_splits": splits,
               "score_network": network, "inception_score_protocol": card.to_dict() if card is not None else None}
    lines = [f"  score        {last[name]:.3f} ± {last[f'{name}_std']:.3f} ({n_samples:,} samples, "
             f"{network['network']})"]
    if card is not None:
        lines.append(f"  protocol     {card}")
    return metrics, lines
