# tiergate: the same set-up command as the README, on a slim Python base, as a non-root user.
FROM python:3.11-slim

RUN useradd --create-home --uid 10001 tiergate
WORKDIR /app
COPY --chown=tiergate:tiergate pyproject.toml README.md rules.yaml ./
COPY --chown=tiergate:tiergate proxy ./proxy
USER tiergate
RUN python3 -m venv .venv && .venv/bin/pip install -q -e .
ENV PATH=/app/.venv/bin:$PATH \
    TIERGATE_HOST=0.0.0.0 \
    TIERGATE_PORT=4000 \
    TIERGATE_CONFIG=/app/rules.yaml \
    TIERGATE_DB=/data/tiergate.db

# The ledger lives on a volume so it outlives the container.
USER root
RUN mkdir -p /data && chown tiergate:tiergate /data
USER tiergate
VOLUME ["/data"]
EXPOSE 4000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python3", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:4000/healthz', timeout=2).status == 200 else 1)"]
# It binds 0.0.0.0, so it refuses to start without client keys (an open relay of the provider keys):
#   docker run -e OPENAI_API_KEY -e TIERGATE_API_KEYS=tg-key-app-1,tg-key-app-2 -p 4000:4000 tiergate
# (TIERGATE_ALLOW_UNAUTHENTICATED=1 only when something in front of it authenticates.)
CMD ["tiergate", "serve", "--config", "/app/rules.yaml", "--host", "0.0.0.0", "--port", "4000"]
