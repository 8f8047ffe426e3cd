# The receiver, for Cloud Run or Kubernetes. Stateless: scale it horizontally behind a load balancer.
# Build from the repository root: docker build -f templates/receiver.Dockerfile -t remote-write-receiver .
FROM python:3.11-slim

WORKDIR /app
COPY setup.py /app/
COPY requirements/constraints.txt /app/requirements/
COPY transforms/ /app/transforms/
COPY receiver/ /app/receiver/
COPY pipeline/ /app/pipeline/
RUN pip install --no-cache-dir -c requirements/constraints.txt -e . \
    && useradd --system --uid 10001 receiver
USER 10001

# Every flag is also an environment variable (RECEIVER_TOPIC, RECEIVER_PORT, ...).
ENV RECEIVER_HOST=0.0.0.0 RECEIVER_PORT=9201
EXPOSE 9201
ENTRYPOINT ["python", "-m", "receiver"]
