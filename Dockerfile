# syntax=docker/dockerfile:1
# aigateway: build wheels in one stage, install only them in a slim, non-root image.

# The full image has the C compiler the compiled build needs: AIGATEWAY_MYPYC=1
# compiles the request path with mypyc (setup.py); the wheel runs on the slim image
# below (same Python, same Debian).
FROM python:3.11-bookworm AS build
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY build_support ./build_support
COPY src ./src
RUN AIGATEWAY_MYPYC=1 pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 aigateway \
 && useradd --system --uid 10001 --gid aigateway --home-dir /var/lib/aigateway \
      --shell /usr/sbin/nologin aigateway \
 && mkdir -p /etc/aigateway /var/lib/aigateway \
 && chown aigateway:aigateway /var/lib/aigateway
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl \
 && rm -rf /wheels
# The example config: works offline through the built-in mock provider.
# Mount your own at /etc/aigateway/gateway.yaml (a ConfigMap, a bind mount, ...).
COPY gateway.yaml.example /etc/aigateway/gateway.yaml
USER 10001:10001
WORKDIR /var/lib/aigateway
EXPOSE 8080
# SIGTERM: /readyz turns 503, the listener closes, in-flight requests and streams
# get server.shutdown_grace_s to finish, then the process exits 0.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["aigateway"]
CMD ["serve", "--config", "/etc/aigateway/gateway.yaml"]
