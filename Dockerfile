# One image for the whole product on Google Cloud:
#  - Flex Template launcher (runs template/main.py = python -m pipeline.run),
#  - Dataflow worker SDK container (launch with sdk_container_image=<this image>, so workers
#    start with TF/TFT installed instead of pip-installing them),
#  - Vertex AI training container (pipeline.run --trainer vertex --vertex_image <this image>
#    runs `python -m trainer.task` in it).
# Build and register it with `make template` (see docs/GCP.md).
FROM gcr.io/dataflow-templates-base/python311-template-launcher-base AS template_launcher

# The Beam SDK image must match the pinned apache-beam and Python 3.11.
FROM apache/beam_python3.11_sdk:2.77.0

COPY --from=template_launcher /opt/google/dataflow/python_template_launcher \
     /opt/google/dataflow/python_template_launcher

ARG WORKDIR=/template
WORKDIR ${WORKDIR}

# Dependencies first (a cached layer), then the code.
COPY requirements.txt constraints.txt ./
RUN pip install --no-cache-dir -r requirements.txt -c constraints.txt

COPY setup.py ./
COPY stagekit stagekit
COPY factorization factorization
COPY pipeline pipeline
COPY transforms transforms
COPY trainer trainer
COPY batch_predict batch_predict
COPY template/main.py template/main.py
RUN pip install --no-cache-dir --no-deps .

ENV FLEX_TEMPLATE_PYTHON_PY_FILE="${WORKDIR}/template/main.py"
ENV FLEX_TEMPLATE_PYTHON_SETUP_FILE="${WORKDIR}/setup.py"
# Everything is installed above; stop the launcher re-resolving dependencies at launch time.
ENV PIP_NO_DEPS=True

# Dataflow workers need the Beam boot script as entrypoint; the launcher and Vertex AI set
# their own command.
ENTRYPOINT ["/opt/apache/beam/boot"]
