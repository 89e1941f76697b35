# panoptes/prometheus: Debian's Prometheus 2.42 for the compose deployment only (it scrapes
# every node there with deploy/compose/prometheus/prometheus.yml and the rules of
# deploy/observability/). No Panoptes code: the build stage only makes the folder the final
# stage copies (build.sh puts the SBOM there). Production runs its own Prometheus.
# Build from the repository root:  docker build -f deploy/images/prometheus.Dockerfile -t panoptes/prometheus:TAG .
ARG DEBIAN_IMAGE=debian:bookworm-slim

FROM ${DEBIAN_IMAGE} AS build
RUN mkdir -p /out/usr/share/doc/panoptes

FROM ${DEBIAN_IMAGE} AS runtime-base
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY deploy/images/packages/prometheus.txt /tmp/packages.txt
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
LABEL org.opencontainers.image.title="panoptes-prometheus" \
      org.opencontainers.image.description="Debian's Prometheus for the Panoptes compose deployment" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.panoptes.build-profile="${PROFILE}" \
      org.panoptes.sbom="/usr/share/doc/panoptes/sbom.cdx.json"
# Health with bash alone (no curl/wget in the image): Prometheus's own readiness endpoint.
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9090 && printf 'GET /-/ready HTTP/1.0\\r\\n\\r\\n' >&3 && read -r _ code _ <&3 && [ \"$code\" = 200 ]"]
USER 10001:10001
EXPOSE 9090
VOLUME ["/prometheus"]
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
