# panoptes/redis: Debian's Redis 7 for the dev overlay and compose only (production runs its
# own Redis, configured as deploy/redis/ says). No Panoptes code: the build stage only makes
# the folder the final stage copies (build.sh puts the SBOM there).
# Build from the repository root:  docker build -f deploy/images/redis.Dockerfile -t panoptes/redis:TAG .
ARG DEBIAN_IMAGE=debian:bookworm-slim

FROM ${DEBIAN_IMAGE} AS build
RUN mkdir -p /out/usr/share/doc/panoptes

FROM ${DEBIAN_IMAGE} AS runtime-base
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY deploy/images/packages/redis.txt /tmp/packages.txt
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
LABEL org.opencontainers.image.title="panoptes-redis" \
      org.opencontainers.image.description="Debian's Redis 7 for Panoptes development deployments (dev overlay, compose)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="BSD-3-Clause" \
      org.panoptes.build-profile="${PROFILE}" \
      org.panoptes.sbom="/usr/share/doc/panoptes/sbom.cdx.json"
USER 10001:10001
EXPOSE 6379 6380
VOLUME ["/data"]
ENTRYPOINT ["/usr/bin/redis-server"]
