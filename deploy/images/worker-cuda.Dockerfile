# panoptes/worker-cuda: the same panoptes-worker binary as panoptes/worker, with libtorch 2.11.0's
# CUDA 13 backend (libtorch_cuda and the NVIDIA runtime wheels the PyTorch 2.11.0 cu130 wheel
# depends on: cuBLAS, cuDNN, NCCL, ...). The worker loads libtorch_cuda.so itself when its
# config says device = "cuda:N" (workers/src/cuda.rs). Needs the NVIDIA driver on the node
# (NVIDIA container toolkit / the Kubernetes device plugin inject it).
# Not built or run in this project's CI (size, and no GPU there): a user builds it with
#   docker build -f deploy/images/worker-cuda.Dockerfile -t panoptes/worker-cuda:TAG .
# and, without a registry, deploy/images/build.sh --only worker-cuda makes the same image from
# the prebuilt binary with the lines after the "final stage" marker (docs/deploy.md).
ARG RUST_IMAGE=rust:1.92-bookworm
ARG DEBIAN_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake=3.25.* python3-venv=3.11.* \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The binary links libtorch_cpu only (the CPU view of scripts/setup.sh), as the CPU image's.
ENV PANOPTES_CACHE=/cache LIBTORCH=/cache/venv/libtorch-cpu LIBTORCH_LIB=/cache/venv/libtorch-cpu
RUN python3 -m venv /cache/venv \
 && /cache/venv/bin/pip install --no-cache-dir --no-deps torch==2.11.0 \
      nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85 \
 && sed -n '/^TORCH_DIR=/,/^fi$/p' scripts/setup.sh > /tmp/shim.sh \
 && VENV=/cache/venv bash -euo pipefail /tmp/shim.sh \
 && cargo build --release --locked -p panoptes-workers --bin panoptes-worker \
 && mkdir -p /out/usr/local/bin /out/usr/share/doc/panoptes \
 && cp target/release/panoptes-worker /out/usr/local/bin/

# The CUDA libraries: the torch wheel WITH its dependencies (the nvidia-* cu13 wheels pinned
# by torch 2.11.0's metadata), only their lib/ folders (no headers, no Python), laid out as in
# site-packages so libtorch's $ORIGIN rpaths (../../nvidia/*/lib) resolve.
FROM ${RUST_IMAGE} AS cuda-libs
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv=3.11.* \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /venv \
 && /venv/bin/pip install --no-cache-dir torch==2.11.0 \
 && site=/venv/lib/python3.11/site-packages \
 && mkdir -p /out/opt/panoptes/torch/lib \
 && find "$site/torch/lib" -maxdepth 1 -name '*.so*' ! -name libtorch_python.so ! -name 'libshm*' \
      -exec cp -L {} /out/opt/panoptes/torch/lib/ \; \
 && for d in "$site"/nvidia/*/lib; do \
      n=$(basename "$(dirname "$d")"); mkdir -p "/out/opt/panoptes/nvidia/$n"; cp -rL "$d" "/out/opt/panoptes/nvidia/$n/"; \
    done

FROM ${DEBIAN_IMAGE} AS runtime-base
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY deploy/images/packages/base.txt /tmp/packages.txt
RUN apt-get update \
 && grep -v '^#' /tmp/packages.txt | xargs apt-get install -y --no-install-recommends \
 && rm -rf /var/lib/apt/lists/* /tmp/packages.txt \
 && echo "panoptes:x:10001:10001:Panoptes:/nonexistent:/usr/sbin/nologin" >> /etc/passwd \
 && echo "panoptes:x:10001:" >> /etc/group

# ---- final stage: build.sh uses these lines as they are (FROM and COPY --from=… /out/ swapped) ----
FROM runtime-base
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG PROFILE=release
ARG CREATED=unknown
# the CUDA libraries first: their layer (~5 GB) is reused while only the binary changes
COPY --from=cuda-libs /out/opt/ /opt/
COPY --from=build /out/usr/ /usr/
LABEL org.opencontainers.image.title="panoptes-worker-cuda" \
      org.opencontainers.image.description="Panoptes worker (CUDA 13): Kafka frames to detections with libtorch 2.11.0 on NVIDIA GPUs" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.panoptes.build-profile="${PROFILE}" \
      org.panoptes.sbom="/usr/share/doc/panoptes/sbom.cdx.json"
# The binary's rpath names the build machine's wheel; here libtorch is under /opt/panoptes, and
# the worker dlopens libtorch_cuda.so from it for device = "cuda:N" (workers/src/cuda.rs).
ENV LD_LIBRARY_PATH=/opt/panoptes/torch/lib \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
HEALTHCHECK --interval=5s --timeout=3s --start-period=60s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9201 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && read -r _ code _ <&3 && [ \"$code\" = 200 ]"]
USER 10001:10001
EXPOSE 9201
ENTRYPOINT ["/usr/local/bin/panoptes-worker"]
CMD ["--config", "/etc/panoptes/worker.toml"]
