"""Packaging for ignite-igan."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


DOCS = ["sphinx>=7.2", "myst-parser>=2.0"]


def _version() -> str:
    for line in (HERE / "ignite_igan" / "__init__.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    raise RuntimeError("ignite_igan/__init__.py has no __version__")


setup(
    name="ignite-igan",
    version=_version(),
    description=(
        "Improved Techniques for Training GANs (Salimans et al., 2016) as PyTorch-Ignite "
        "handlers, metrics, layers and recipes"
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    author="The ignite-igan developers",
    license="MIT",
    url="https://github.com/ignite-igan/ignite-igan",
    project_urls={
        "Paper": "https://arxiv.org/abs/1606.03498",
        "Reference code": "https://github.com/openai/improved-gan",
    },
    packages=find_packages(include=["ignite_igan", "ignite_igan.*"]),
    python_requires=">=3.9",
    install_requires=[
        # Regular (CUDA-capable) builds from the registry; they run on CPU too.
        "torch>=2.1",
        "torchvision>=0.16",
        "pytorch-ignite>=0.5.5,<0.7",
        "tensorboard>=2.10",
        "scipy>=1.9",
        "numpy>=1.23",
        "torch-fidelity>=0.3",
        "tqdm>=4.60",
    ],
    extras_require={
        "digits": ["scikit-learn>=1.1"],  # the bundled digits data set of the digits recipes
        "plot": ["matplotlib>=3.5"],  # the mixture recipe's scatter plots
        # the documentation site in docs/ (tests/test_docs.py builds it with warnings as errors)
        "docs": DOCS,
        "test": ["pytest>=7", "scikit-learn>=1.1", "matplotlib>=3.5", *DOCS],
    },
    classifiers=[
        "Development Status :: 3 - Alpha",
        "Intended Audience :: Science/Research",
        "License :: OSI Approved :: MIT License",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
    keywords="gan pytorch ignite semi-supervised inception-score minibatch-discrimination",
)
