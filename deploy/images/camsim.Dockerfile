# panoptes/camsim: the TOOLS image for the dev profile and demos (never a production image):
# panoptes-camsim (RTSP camera simulator), panoptes-devbroker (development Kafka broker),
# panoptes-check (accounting checker).
# Build from the repository root:  docker build -f deploy/images/camsim.Dockerfile -t panoptes/camsim:TAG .
# Offline, deploy/images/build.sh makes the same image from prebuilt binaries with the lines
# after the "final stage" marker.
ARG RUST_IMAGE=rust:1.92-bookworm
ARG DEBIAN_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake=3.25.* libgstreamer1.0-dev=1.22.* \
      libgstreamer-plugins-base1.0-dev=1.22.* libgstreamer-plugins-bad1.0-dev=1.22.* \
      libgstrtspserver-1.0-dev=1.22.* \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p panoptes-camsim -p panoptes-devbroker -p panoptes-checker \
      --bin panoptes-camsim --bin panoptes-devbroker --bin panoptes-check \
 && mkdir -p /out/usr/local/bin /out/usr/share/doc/panoptes \
 && cp target/release/panoptes-camsim target/release/panoptes-devbroker target/release/panoptes-check /out/usr/local/bin/

FROM ${DEBIAN_IMAGE} AS runtime-base
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY deploy/images/packages/sim.txt /tmp/packages.txt
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
LABEL org.opencontainers.image.title="panoptes-camsim" \
      org.opencontainers.image.description="Panoptes tools for dev and demos: camera simulator, development Kafka broker, checker" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.panoptes.build-profile="${PROFILE}" \
      org.panoptes.sbom="/usr/share/doc/panoptes/sbom.cdx.json"
ENV GST_REGISTRY=/tmp/gstreamer-registry.bin
USER 10001:10001
EXPOSE 8554
ENTRYPOINT ["/usr/local/bin/panoptes-camsim"]
