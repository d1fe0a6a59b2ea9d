"""Sample-quality and classification metrics: Inception Score, FID, semi-supervised error, mode coverage."""
from ignite_igan.metrics.extractors import (
    INPUT_RANGES,
    TF_INCEPTION_SHA256,
    TF_INCEPTION_URL,
    ClassifierExtractor,
    ImageExtractor,
    TFInceptionV3,
    TorchvisionInceptionV3,
    resolve_tf_inception_weights,
    sha256_of_file,
    to_uint8,
)
from ignite_igan.metrics.inception import FID, InceptionScore, gather_in_rank_order
from ignite_igan.metrics.mode_coverage import (
    GaussianMixture2D,
    ModeCoverage,
    default_min_count,
    grid_centers,
    grid_mixture,
    mode_coverage,
    ring_centers,
    ring_mixture,
)
from ignite_igan.metrics.sampling import GeneratorEvaluator, evaluation_mode, score_generator
from ignite_igan.metrics.ssl_error import ErrorEvaluator, SemiSupervisedError

__all__ = [
    "INPUT_RANGES",
    "TF_INCEPTION_SHA256",
    "TF_INCEPTION_URL",
    "ClassifierExtractor",
    "ImageExtractor",
    "TFInceptionV3",
    "TorchvisionInceptionV3",
    "resolve_tf_inception_weights",
    "sha256_of_file",
    "to_uint8",
    "FID",
    "InceptionScore",
    "gather_in_rank_order",
    "GaussianMixture2D",
    "ModeCoverage",
    "default_min_count",
    "grid_centers",
    "grid_mixture",
    "mode_coverage",
    "ring_centers",
    "ring_mixture",
    "GeneratorEvaluator",
    "evaluation_mode",
    "score_generator",
    "ErrorEvaluator",
    "SemiSupervisedError",
]
