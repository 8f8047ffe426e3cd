# The receiver, for Cloud Run or Kubernetes. Stateless: scale it horizontally behind a load balancer.
# Build from the repository root: docker build -f templates/receiver.Dockerfile -t remote-write-receiver .
# The compiled decoder (transforms.core.wire._wire, C) is built as a wheel where a compiler is; the slim image
# only installs it.
FROM python:3.11-bookworm AS wheel
WORKDIR /src
COPY setup.py /src/
COPY transforms/ /src/transforms/
COPY receiver/ /src/receiver/
COPY pipeline/ /src/pipeline/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim

WORKDIR /app
COPY requirements/constraints.txt /app/requirements/
COPY --from=wheel /wheels/ /app/wheels/
RUN pip install --no-cache-dir -c requirements/constraints.txt /app/wheels/*.whl \
    && useradd --system --uid 10001 receiver
USER 10001

# Every flag is also an environment variable (RECEIVER_TOPIC, RECEIVER_PORT, ...).
ENV RECEIVER_HOST=0.0.0.0 RECEIVER_PORT=9201
EXPOSE 9201
ENTRYPOINT ["python", "-m", "receiver"]
