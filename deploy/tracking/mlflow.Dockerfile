# The MLflow tracking server of the tracking stack: MLflow as pinned in constraints.txt, with the
# PostgreSQL driver (backend store) and boto3 (S3-compatible artifact store).
#   docker build -f deploy/tracking/mlflow.Dockerfile -t REGISTRY/trainyard-mlflow:3.17.2 deploy/tracking
FROM python:3.11-slim-bookworm
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
RUN pip install mlflow==3.17.2 psycopg2-binary==2.9.11 boto3==1.44.5
RUN useradd --create-home --uid 1000 mlflow
USER mlflow
EXPOSE 5000
ENTRYPOINT ["mlflow", "server"]
