# edge-runtime in a container, one image for amd64 and arm64 (docs/container.md).
#
#   docker buildx build --platform linux/amd64,linux/arm64 -t edge-runtime .
#   docker run --rm --stop-timeout 15 -e MQTT_HOST=broker.example -v edge-state:/var/lib/edge-runtime edge-runtime
#
# The same install as scripts/arm64.sh's root and scripts/setup.sh: Debian bookworm, Python 3.11,
# a venv with edge-runtime and both runtimes (the [all] extras), the bundled models. It runs as
# the unprivileged user edge-runtime; its state (the outbox, installed model updates) lives in
# the volume /var/lib/edge-runtime. Without arguments it runs the demo config on the bundled
# video; mount your own config and run it with: ... edge-runtime run /etc/edge-runtime/config.yaml
# Cameras and accelerators are the host's: pass them with --device (the user is in the video,
# plugdev and apex groups).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    EDGE_STATE_DIR=/var/lib/edge-runtime \
    PATH=/opt/edge-runtime/venv/bin:$PATH

RUN groupadd --system apex && groupadd --system plugdev \
    && useradd --system --uid 10001 --user-group --groups video,plugdev,apex \
       --home-dir /var/lib/edge-runtime --create-home --shell /usr/sbin/nologin edge-runtime

# the package first (its layer changes less often than the models)
COPY pyproject.toml README.md /src/
COPY edge_runtime /src/edge_runtime
RUN python -m venv /opt/edge-runtime/venv \
    && /opt/edge-runtime/venv/bin/pip install "/src[all]" \
    && rm -rf /src

COPY models /opt/edge-runtime/models
COPY configs /opt/edge-runtime/configs
COPY samples /opt/edge-runtime/samples

USER edge-runtime
WORKDIR /var/lib/edge-runtime
VOLUME /var/lib/edge-runtime
# the daemon stops in about 12 s at most (docs/architecture.md); give it --stop-timeout 15
STOPSIGNAL SIGTERM
ENTRYPOINT ["edge-runtime"]
CMD ["run", "/opt/edge-runtime/configs/demo.yaml"]
