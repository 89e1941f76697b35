# panoptes/ingest: panoptes-ingest with the GStreamer runtime plugins its pipeline uses
# (packages/media.txt; no -dev packages, no libtorch).
# Build from the repository root:  docker build -f deploy/images/ingest.Dockerfile -t panoptes/ingest:TAG .
# Offline, deploy/images/build.sh makes the same image from prebuilt binaries with the lines
# after the "final stage" marker.
ARG RUST_IMAGE=rust:1.92-bookworm
ARG DEBIAN_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake=3.25.* libgstreamer1.0-dev=1.22.* \
      libgstreamer-plugins-base1.0-dev=1.22.* libgstreamer-plugins-bad1.0-dev=1.22.* \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p panoptes-ingest --bin panoptes-ingest \
 && mkdir -p /out/usr/local/bin /out/usr/share/doc/panoptes \
 && cp target/release/panoptes-ingest /out/usr/local/bin/

FROM ${DEBIAN_IMAGE} AS runtime-base
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY deploy/images/packages/media.txt /tmp/packages.txt
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
COPY --from=build /out/ /
LABEL org.opencontainers.image.title="panoptes-ingest" \
      org.opencontainers.image.description="Panoptes ingest node: RTSP cameras to JPEG frames on Kafka" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.panoptes.build-profile="${PROFILE}" \
      org.panoptes.sbom="/usr/share/doc/panoptes/sbom.cdx.json"
# GStreamer writes its plugin registry cache; /tmp is the one writable place (an emptyDir).
ENV GST_REGISTRY=/tmp/gstreamer-registry.bin
# Docker/compose health (Kubernetes uses its own probes): /healthz over plain HTTP, with
# bash alone (no curl in the image).
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9101 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && read -r _ code _ <&3 && [ \"$code\" = 200 ]"]
USER 10001:10001
EXPOSE 9101
ENTRYPOINT ["/usr/local/bin/panoptes-ingest"]
CMD ["--config", "/etc/panoptes/ingest.toml"]
