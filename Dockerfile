# One image for every Tandem process (migrate, scheduler, stream, service); the command picks the role.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OMP_NUM_THREADS=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY core ./core
COPY service ./service
COPY scheduler ./scheduler
COPY streaming ./streaming
COPY consistency ./consistency
COPY tandem ./tandem
COPY migrations ./migrations
COPY feature_repo ./feature_repo
RUN pip install . && useradd --create-home tandem
USER tandem

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health/ready').status != 200)"
CMD ["tandem", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
