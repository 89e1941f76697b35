# panoptes/coordinator: panoptes-coordinator, the panoptes operator CLI and panoptes-redis-acl.
# Build from the repository root:  docker build -f deploy/images/coordinator.Dockerfile -t panoptes/coordinator:TAG .
# Links neither GStreamer nor libtorch. Offline (no registry), deploy/images/build.sh makes the
# same image from prebuilt binaries with the lines after the "final stage" marker.
ARG RUST_IMAGE=rust:1.92-bookworm
ARG DEBIAN_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake=3.25.* \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p panoptes-coordinator -p panoptes-coordinator-client \
      --bin panoptes-coordinator --bin panoptes --bin panoptes-redis-acl \
 && mkdir -p /out/usr/local/bin /out/usr/share/doc/panoptes \
 && cp target/release/panoptes-coordinator target/release/panoptes target/release/panoptes-redis-acl /out/usr/local/bin/

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
COPY --from=build /out/ /
LABEL org.opencontainers.image.title="panoptes-coordinator" \
      org.opencontainers.image.description="Panoptes coordinator (leader election, placement, operator API) with the panoptes CLI" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.panoptes.build-profile="${PROFILE}" \
      org.panoptes.sbom="/usr/share/doc/panoptes/sbom.cdx.json"
# Docker/compose health (Kubernetes uses its own probes): the port accepts connections
# (TLS or not: a TCP connect, with bash alone).
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/7300"]
USER 10001:10001
EXPOSE 7300
ENTRYPOINT ["/usr/local/bin/panoptes-coordinator"]
CMD ["--config", "/etc/panoptes/coordinator.toml"]
