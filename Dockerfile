# The same environment as `make setup`, then the main job. Build: docker build -t pricer .
# Run the main job: docker run --rm -p 5000:5000 pricer      Run the tests: docker run --rm pricer make test
FROM python:3.11-slim

RUN apt-get update \
 && apt-get install -y --no-install-recommends git make \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    HF_DATASETS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false

# Dependencies first, so that a code change does not reinstall them. torch's CPU build comes
# from PyTorch's index (the lock pins torch==2.13.0, which PyPI serves only as a CUDA build).
COPY requirements.lock pyproject.toml Makefile ./
RUN python -m venv .venv \
 && .venv/bin/pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.lock

COPY . .
RUN .venv/bin/pip install --no-cache-dir --no-deps -e . \
 && touch .venv/bin/.installed \
 && (git rev-parse --git-dir >/dev/null 2>&1 || (git init -q && git add -A && git -c user.name=pricer -c user.email=pricer@localhost commit -qm image))

EXPOSE 5000 4200 7860
CMD ["make", "demo"]
