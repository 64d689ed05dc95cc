# The MLflow tracking server of the tracking stack: MLflow as pinned in constraints.txt, with the
# PostgreSQL driver (backend store: psycopg 3, which SQLAlchemy 2.1 opens postgresql:// URIs with;
# psycopg2 alone fails with "No module named 'psycopg'") and boto3 (S3-compatible artifact store).
# Telemetry is off, as in every trainyard process (docs: README, "The MLflow UI").
#   docker build -f deploy/tracking/mlflow.Dockerfile -t REGISTRY/trainyard-mlflow:3.17.2 deploy/tracking
FROM python:3.11-slim-bookworm
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 MLFLOW_DISABLE_TELEMETRY=true
RUN pip install mlflow==3.17.2 'psycopg[binary]==3.3.9' boto3==1.44.5
RUN useradd --create-home --uid 1000 mlflow
USER mlflow
EXPOSE 5000
ENTRYPOINT ["mlflow", "server"]
