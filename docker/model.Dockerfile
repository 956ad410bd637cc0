# The BLIP-2 model server (python -m model.serve) on a GPU box, on port 8080.
#
#   docker build -f docker/model.Dockerfile -t blip2-server .
#   docker run --gpus all -p 8080:8080 -v /path/to/blip2-opt-2.7b:/opt/ml/model:ro blip2-server
#   curl localhost:8080/ping
#
# Point the service at it with VISION_BACKEND=sagemaker SAGEMAKER_RUNTIME_URL=http://<box>:8080.
# The host needs only the NVIDIA driver and container toolkit: torch from PyPI brings its own CUDA
# libraries as wheels. No SigV4 check is made: keep the port on a private network.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    MODEL_DEVICE=cuda \
    MODEL_MAX_BATCH_SIZE=16 \
    MODEL_MAX_WAIT_MS=5

WORKDIR /srv

# Dependencies first, so that a code change does not reinstall them. torch alone first: it is the
# big layer, and with it in place the rest resolves against it. The server's own packages come
# pinned by the service's lock file (-c), the model's by model/code/requirements.txt.
RUN pip install torch==2.13.0
COPY requirements.txt /srv/requirements.txt
COPY model/code/requirements.txt /srv/model/code/requirements.txt
RUN pip install -c /srv/requirements.txt uvicorn starlette pillow -r /srv/model/code/requirements.txt

COPY model/__init__.py model/batching.py model/serve.py model/thread.py /srv/model/
COPY model/code/__init__.py model/code/inference.py /srv/model/code/

RUN useradd --system --uid 10001 --no-create-home model
USER 10001

EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/ping', timeout=4)"]
# SIGTERM: uvicorn stops taking requests and finishes those in flight (up to 20 s).
STOPSIGNAL SIGTERM
CMD ["python", "-m", "model.serve", "--model-dir", "/opt/ml/model", "--host", "0.0.0.0", "--port", "8080"]
