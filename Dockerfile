# Pipeline image for Kubeflow Pipelines v2 / Vertex AI: TFX's own image plus this repository, so the
# components find `components.*` (preprocessing_fn, run_fn, the joining ExampleGen). The data contract is
# compiled into the pipeline; the curated schema is the committed one under schema/ (`recsys compile --schema-dir
# schema/NAME` names it relative to the WORKDIR, where the components run), or beside the data (DATA_ROOT/schema.pbtxt).
# Build: make image IMAGE=registry/recsys-pipeline:TAG   (needs a Docker engine)
FROM tensorflow/tfx:1.16.0

ENV TF_USE_LEGACY_KERAS=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /pipeline

# The same pins as the local venv (TFX 1.16 stack, kfp 2.7 / protobuf 4.25, tf-keras, dill).
COPY requirements.lock ./
RUN pip install --no-cache-dir --no-deps -r requirements.lock

COPY setup.py README.md ./
COPY components ./components
COPY pipeline ./pipeline
COPY serving ./serving
COPY data ./data
COPY schema ./schema
RUN pip install --no-cache-dir --no-deps -e .
# The base image's ENTRYPOINT (TFX's container entrypoint) is kept: Kubeflow calls it per component.
