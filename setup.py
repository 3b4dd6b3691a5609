"""Package definition; also the `--setup_file` that Dataflow workers install."""
import setuptools

REQUIRED = [
    "apache-beam[gcp]==2.77.0",
    "tensorflow==2.21.0",
    "tensorflow-transform==1.21.0",
    "tfx-bsl==1.21.0",
    "google-cloud-bigquery==3.47.0",
    "matplotlib==3.11.2",
    "optuna==5.0.0",
    "cloudml-hypertune==0.1.0.dev6",
]

setuptools.setup(
    name="ga-wals",
    version="0.1.0",
    description="WALS recommendations from Google Analytics sessions: Beam + TF Transform + TF2.",
    python_requires=">=3.11,<3.12",
    packages=setuptools.find_packages(include=["stagekit*", "factorization*", "pipeline*", "transforms*", "trainer*", "batch_predict*"]),
    package_data={"pipeline": ["data/*"]},
    install_requires=REQUIRED,
    extras_require={
        "test": ["pytest==9.2.0", "sqlglot==30.30.0", "duckdb==2.0.0", "hypothesis==6.170.15",
                 "import-linter==2.17"],
        "bench": ["implicit==0.7.3"],
        # to view model/logs: tensorboard --logdir OUTPUT/model/logs (the trainer writes the
        # scalars with TF's own summary ops, so training never needs this package)
        "tensorboard": ["tensorboard==2.21.0"],
    },
    entry_points={"console_scripts": ["ga-wals=pipeline.run:console_main"]},  # = python -m pipeline.run
)
