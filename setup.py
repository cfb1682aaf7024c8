"""Installs the recommender pipeline's packages and the `recsys` command.

Dependencies are pinned in requirements.lock (installed by `make venv`); the ranges here only
document what the code needs, so `pip install .` into a TFX 1.16 image does not fight its pins.
"""

from setuptools import find_packages, setup

setup(
    name="tfx-recsys",
    version="0.1.0",
    description="A TFX recommender pipeline: ExampleGen to Pusher, served over TF Serving's gRPC API.",
    python_requires=">=3.9,<3.11",
    packages=find_packages(include=["pipeline*", "components*", "serving*", "data*"]),
    install_requires=[
        "tfx==1.16.0",
        "tensorflow-transform>=1.16,<1.17",
        "tensorflow-serving-api>=2.16,<2.17",
        "tensorflow>=2.16,<2.17",
        "numpy<2",
        "grpcio",
        "dill",
        "implicit==0.7.3",  # iALS, auto's model above EASE's catalogue limit
        "threadpoolctl",  # EASE's background solve keeps to one BLAS thread (components/models/ease.py)
    ],
    extras_require={"test": ["pytest"], "kubeflow": ["kfp==2.7.0", "kfp-pipeline-spec==0.3.0"],
                    "ann": ["scann==1.3.2"]},
    entry_points={"console_scripts": ["recsys=pipeline.cli:main"]},
)
