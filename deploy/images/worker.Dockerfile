# panoptes/worker (CPU): panoptes-worker with libtorch 2.11.0 from the PyTorch wheel
# (libtorch_cpu, libc10, libgomp, and the libcudart/libcupti that libtorch_cpu names), no
# GStreamer. The CUDA variant: worker-cuda.Dockerfile (same binary, more libraries).
# Build from the repository root:  docker build -f deploy/images/worker.Dockerfile -t panoptes/worker:TAG .
# Offline, deploy/images/build.sh makes the same image from prebuilt binaries with the lines
# after the "final stage" marker.
ARG RUST_IMAGE=rust:1.92-bookworm
ARG DEBIAN_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake=3.25.* python3-venv=3.11.* \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The same libtorch view scripts/setup.sh makes (torch wheel + the two CUDA runtime wheels
# libtorch_cpu names; torch-sys links libtorch_cpu only).
ENV PANOPTES_CACHE=/cache LIBTORCH=/cache/venv/libtorch-cpu LIBTORCH_LIB=/cache/venv/libtorch-cpu
RUN python3 -m venv /cache/venv \
 && /cache/venv/bin/pip install --no-cache-dir --no-deps torch==2.11.0 \
      nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85 \
 && sed -n '/^TORCH_DIR=/,/^fi$/p' scripts/setup.sh > /tmp/shim.sh \
 && VENV=/cache/venv bash -euo pipefail /tmp/shim.sh \
 && cargo build --release --locked -p panoptes-workers --bin panoptes-worker \
 && site=/cache/venv/lib/python3.11/site-packages \
 && mkdir -p /out/usr/local/bin /out/usr/share/doc/panoptes /out/opt/panoptes/torch/lib /out/opt/panoptes/nvidia/cu13/lib \
 && cp target/release/panoptes-worker /out/usr/local/bin/ \
 && cp -L "$site"/torch/lib/libtorch_cpu.so "$site"/torch/lib/libc10.so "$site"/torch/lib/libgomp.so.1 /out/opt/panoptes/torch/lib/ \
 && cp -L "$site"/nvidia/cu13/lib/libcudart.so.13 "$site"/nvidia/cu13/lib/libcupti.so.13 /out/opt/panoptes/nvidia/cu13/lib/

FROM ${DEBIAN_IMAGE} AS runtime-base
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY deploy/images/packages/base.txt /tmp/packages.txt
RUN apt-get update \
 && grep -v '^#' /tmp/packages.txt | xargs apt-get install -y --no-install-recommends \
 && rm -rf /var/lib/apt/lists/* /tmp/packages.txt \
 && echo "panoptes:x:10001:10001:Panoptes:/nonexistent:/usr/sbin/nologin" >> /etc/passwd \
 && echo "panoptes:x:10001:" >> /etc/group

# ---- final stage: build.sh uses these lines as they are (FROM and COPY --from=build swapped) ----
FROM runtime-base
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG PROFILE=release
ARG CREATED=unknown
# libtorch first: its layer (~480 MB) is reused while only the binary changes
COPY --from=build /out/opt/ /opt/
COPY --from=build /out/usr/ /usr/
LABEL org.opencontainers.image.title="panoptes-worker" \
      org.opencontainers.image.description="Panoptes worker (CPU): Kafka frames to detections with libtorch 2.11.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.panoptes.build-profile="${PROFILE}" \
      org.panoptes.sbom="/usr/share/doc/panoptes/sbom.cdx.json"
# The binary's rpath names the build machine's wheel; here libtorch is under /opt/panoptes.
ENV LD_LIBRARY_PATH=/opt/panoptes/torch/lib
# Docker/compose health (Kubernetes uses its own probes): /healthz over plain HTTP, with
# bash alone (no curl in the image).
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9201 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && read -r _ code _ <&3 && [ \"$code\" = 200 ]"]
USER 10001:10001
EXPOSE 9201
ENTRYPOINT ["/usr/local/bin/panoptes-worker"]
CMD ["--config", "/etc/panoptes/worker.toml"]
