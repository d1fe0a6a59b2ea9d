"""Sample-quality and classification metrics: Inception Score, FID, semi-supervised error, mode coverage.

Modules (an acyclic import graph, checked by ``tests/test_protocol.py``): :mod:`~ignite_igan.metrics.modes`
(``evaluation_mode``) and :mod:`~ignite_igan.metrics.protocol` (the protocol card, ``tf32_mode``) import nothing of
the package; :mod:`~ignite_igan.metrics.extractors` imports those two; :mod:`~ignite_igan.metrics.inception` and
:mod:`~ignite_igan.metrics.fid` import the extractors; :mod:`~ignite_igan.metrics.sampling` imports the Inception
Score for its default.
"""
from ignite_igan.metrics.extractors import (
    INPUT_RANGES,
    TF_INCEPTION_SHA256,
    TF_INCEPTION_URL,
    ClassifierExtractor,
    ImageExtractor,
    SharedPass,
    TFInceptionV3,
    TorchvisionInceptionV3,
    callable_fingerprint,
    resolve_tf_inception_weights,
    sha256_of_file,
    state_dict_sha256,
    to_uint8,
)
from ignite_igan.metrics.fid import FID, FeatureStatistics, RealImages, default_statistics_dir
from ignite_igan.metrics.inception import InceptionScore, gather_in_rank_order
from ignite_igan.metrics.mode_coverage import (
    GaussianMixture2D,
    benchmark_mixture,
    ModeCoverage,
    default_min_count,
    grid_centers,
    grid_mixture,
    mode_coverage,
    ring_centers,
    ring_mixture,
)
from ignite_igan.metrics.modes import evaluation_mode
from ignite_igan.metrics.protocol import Protocol, publish_protocol, published_protocols, tf32_mode
from ignite_igan.metrics.sampling import GeneratorEvaluator, generate_samples, score_generator
from ignite_igan.metrics.ssl_error import ErrorEvaluator, SemiSupervisedError

__all__ = [
    "INPUT_RANGES",
    "TF_INCEPTION_SHA256",
    "TF_INCEPTION_URL",
    "ClassifierExtractor",
    "ImageExtractor",
    "SharedPass",
    "TFInceptionV3",
    "TorchvisionInceptionV3",
    "callable_fingerprint",
    "resolve_tf_inception_weights",
    "sha256_of_file",
    "state_dict_sha256",
    "to_uint8",
    "FID",
    "FeatureStatistics",
    "RealImages",
    "default_statistics_dir",
    "InceptionScore",
    "gather_in_rank_order",
    "GaussianMixture2D",
    "benchmark_mixture",
    "ModeCoverage",
    "default_min_count",
    "grid_centers",
    "grid_mixture",
    "mode_coverage",
    "ring_centers",
    "ring_mixture",
    "Protocol",
    "publish_protocol",
    "published_protocols",
    "tf32_mode",
    "GeneratorEvaluator",
    "evaluation_mode",
    "score_generator",
    "generate_samples",
    "ErrorEvaluator",
    "SemiSupervisedError",
]
